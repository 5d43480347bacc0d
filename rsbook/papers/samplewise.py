"""Chapter 2, pretrain-to-finetune sample-wise smoothing (Wang et al. 2020): the book's reconstruction.

Only the paper's abstract and part of its introduction are public, and no code. Every step here
is the book's, following the reconstruction in the book's notes and labelled so: the pretrained
model (a random sigma per training image, uniform on ``[0, sigma_max]``: chapter 0's universal model
on CIFAR-10), the per-sample level (the grid level maximizing MACER's soft radius on ``k`` noisy
copies, where the prediction is right), the fine-tuning (Gaussian augmentation at each image's
level), the test-time level (the same criterion on the test point's own noisy copies, from the
``selector`` stream, never the certificate's), and three certificates side by side: the naive one
(Cohen at the point's own level; not a guarantee), the transductive one (allocated robust regions,
:mod:`rsbook.methods.samplewise`) and the inductive one (the Neyman-Pearson worst case over every
level the rule can give, :mod:`rsbook.core.varying`). A DDRS row (Alfarra et al.) uses the
``ddsmoothing`` library's optimizer on chapter 0's fixed-sigma models.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm

from ..book.claims import Claims, greater
from ..book.eta import Plan, Planned
from ..book.profiles import chapter_store, check_profile
from ..core.certify import Smooth
from ..core.varying import varying_radius
from ..infra.artifacts import ArtifactStore, config_key
from ..infra.data import NUM_CLASSES, test_subset
from ..methods.samplewise import (allocate, choose_sigmas, ddrs_memory, ddrs_sigmas, memory_rule, pairwise_distances,
                                  selection_generators)
from ..models.classifiers import for_inference
from ..runs.runner import CertifyConfig, NoiseTable, certification_log
from ..training.classifier import TrainConfig
from ..training.samplewise import SampleWiseConfig, SigmaAssignment, assigned_sigmas
from ..training.stored import trained
from . import cohen2019
from .common import smooth_for, stored_table
from .variational import spread_table

__all__ = ["CHAPTER", "DATASETS", "DIMS", "Settings", "settings", "store", "pretrain_config", "assignment_config",
           "finetune_config", "TestSigmas", "test_sigmas_config", "DDRSSigmas", "ddrs_config", "load_model", "assignment",
           "test_sigmas", "ddrs_table", "certify_config", "certification", "baseline_logs", "transductive", "order_spread",
           "inductive", "InductiveConfig", "inductive_config", "stored_inductive", "worked_example", "spread", "SpreadConfig", "spread_config", "stored_spread", "summary", "as_curve", "log_curve", "MACER_CIFAR10", "MACER_SOURCE", "claims", "planned_work"]

CHAPTER = "02_samplewise_smoothing"
DATASETS = ("cifar10", "mnist")
DIMS = {"cifar10": 3 * 32 * 32, "mnist": 28 * 28}


@dataclass(frozen=True)
class Settings:
    """Chapter 2's settings at one profile. The paper gives none of them: all are the book's."""

    grids: tuple[tuple[str, tuple[float, ...]], ...]  # per data set: chapter 0's sigmas
    k_train: int  # noisy copies per level in the training assignment (MACER: 16)
    train_subset: int  # training images assigned and fine-tuned on (0: all)
    epochs: int  # fine-tuning epochs
    k_test: int  # noisy copies per level in the test-time choice
    every: int  # certify every k-th test image
    n0: int
    n: int
    alpha: float = 0.001
    lr: float = 0.01
    batch_size: int = 256
    max_batches: int = 0
    universal_sigma: float = 1.0  # the pretraining: sigma_i ~ U(0, universal_sigma) per image
    ddrs: tuple[tuple[str, float], ...] = (("cifar10", 0.25), ("mnist", 0.50))  # chapter 0's model and DDRS's sigma_0 per data set
    ddrs_lr: float = 0.01
    ddrs_iterations: int = 20
    ddrs_samples: int = 16
    orders: int = 20  # random test-set orders for the memory rule's spread

    def grid(self, dataset: str) -> tuple[float, ...]:
        return dict(self.grids)[dataset]


_GRIDS = (("cifar10", (0.12, 0.25, 0.50, 1.00)), ("mnist", (0.25, 0.50, 1.00)))
_SETTINGS = {
    "smoke": Settings(grids=_GRIDS, k_train=2, train_subset=256, epochs=1, k_test=4, every=500, n0=10, n=100, batch_size=64,
                      ddrs_iterations=2, ddrs_samples=2, orders=3),
    # the published book: 20,000 training images, 5 epochs of fine-tuning, 500 test images at N = 1,000
    "cpu": Settings(grids=_GRIDS, k_train=8, train_subset=20_000, epochs=5, k_test=32, every=20, n0=100, n=1000),
    # the paper's scale as the notes reconstruct it: the whole training set, MACER's k = 16, N = 100,000
    "paper": Settings(grids=_GRIDS, k_train=16, train_subset=0, epochs=30, k_test=100, every=20, n0=100, n=100_000,
                      ddrs_iterations=100, ddrs_samples=100, ddrs_lr=0.002),
}


def settings(profile: str) -> Settings:
    """The settings at ``profile``; ``dry_run`` is ``paper`` with one batch of one epoch, one test
    image per run and tiny sample sizes (derived here, so it cannot drift from ``paper``)."""
    check_profile(profile)
    if profile == "dry_run":
        p = _SETTINGS["paper"]
        return dataclasses.replace(p, k_train=2, train_subset=8, epochs=1, max_batches=1, batch_size=4, k_test=2, every=5000,
                                   n0=5, n=20, ddrs_iterations=2, ddrs_samples=2, orders=2)
    return _SETTINGS[profile]


def store(profile: str, recompute: bool = False) -> ArtifactStore:
    return chapter_store(CHAPTER, profile, recompute)


def pretrain_config(dataset: str, profile: str, seed: int = 0) -> TrainConfig:
    """The pretrained model: a random sigma per image, ``U(0, universal_sigma)``. On CIFAR-10 it is
    chapter 0's universal model; on MNIST chapter 0's LeNet recipe with that sigma rule."""
    s = settings(profile)
    if dataset == "cifar10":
        return cohen2019.cifar_config(s.universal_sigma, profile, "universal", seed)
    if dataset == "mnist":
        return dataclasses.replace(cohen2019.mnist_config(s.universal_sigma, profile, seed), sigma_mode="universal")
    raise ValueError(f"chapter 2 runs on {DATASETS}, got {dataset!r}")


def assignment_config(dataset: str, profile: str, seed: int = 0) -> SigmaAssignment:
    s = settings(profile)
    return SigmaAssignment(pretrain_config(dataset, profile, seed), s.grid(dataset), s.k_train, s.train_subset, seed)


def finetune_config(dataset: str, profile: str, seed: int = 0) -> SampleWiseConfig:
    s = settings(profile)
    return SampleWiseConfig(assignment_config(dataset, profile, seed), epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                            max_batches=s.max_batches, seed=seed)


def _store_of(profile: str):
    """Where a model lives: chapter 0's models (its fixed and universal CIFAR-10 classifiers) in chapter 0's store."""
    def where(cfg) -> ArtifactStore:
        ours = cfg == pretrain_config("mnist", profile, getattr(cfg, "seed", 0))
        return store(profile) if ours or not isinstance(cfg, TrainConfig) else cohen2019.store(profile)
    return where


def load_model(cfg, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> torch.nn.Module:
    """A model of the chapter (pretrained, fine-tuned or chapter 0's), trained and stored first if absent."""
    return for_inference(trained(cfg, _store_of(profile)(cfg), device, progress, store_of=_store_of(profile)))


def assignment(dataset: str, profile: str, device: torch.device | str = "cpu", progress: bool = True,
               seed: int = 0) -> pd.DataFrame:
    """The training images' levels (stored with the fine-tuning; computed with the pretrained model if absent)."""
    cfg = assignment_config(dataset, profile, seed)
    return assigned_sigmas(cfg, store(profile), lambda: load_model(cfg.base, profile, device, progress), device)


@dataclass(frozen=True)
class TestSigmas:
    """The test-time level of every ``every``-th test image: the grid level maximizing the soft radius
    of the top two classes over ``k`` noisy copies of the test image (``selector`` stream)."""

    model: SampleWiseConfig | TrainConfig
    grid: tuple[float, ...]
    k: int
    dataset: str
    every: int
    seed: int = 0


def test_sigmas_config(dataset: str, profile: str, seed: int = 0, pretrained_only: bool = False) -> TestSigmas:
    s = settings(profile)
    model = pretrain_config(dataset, profile, seed) if pretrained_only else finetune_config(dataset, profile, seed)
    return TestSigmas(model, s.grid(dataset), s.k_test, dataset, s.every, seed)


def test_sigmas(cfg: TestSigmas, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> pd.DataFrame:
    """The stored table of :class:`TestSigmas` (``idx``, ``sigma``, one soft radius per level)."""
    def compute(out, work):
        t = time.perf_counter()
        data = test_subset(cfg.dataset, cfg.every)
        idx = data.indices.tolist()
        gens = selection_generators(cfg.seed, idx, len(cfg.grid), device)
        picks = choose_sigmas(load_model(cfg.model, profile, device, progress), [data[j][0] for j in range(len(data))], cfg.grid,
                              cfg.k, gens)
        table = pd.DataFrame({"idx": idx, "sigma": [p.sigma for p in picks]})
        for j, sg in enumerate(cfg.grid):
            table[f"soft_{sg:g}"] = [round(p.soft[j], 6) for p in picks]
        table.to_csv(out, sep="\t", index=False)
        return {"images": len(idx), "seconds": time.perf_counter() - t}

    path, _ = store(profile).load_or_compute(cfg, compute, "tsv", device=device)
    return pd.read_csv(path, sep="\t")


@dataclass(frozen=True)
class DDRSSigmas:
    """DDRS's optimized level of every ``every``-th test image for chapter 0's model ``model``."""

    model: TrainConfig
    sigma0: float
    lr: float
    iterations: int
    samples: int
    dataset: str
    every: int
    seed: int = 0


def ddrs_config(dataset: str, profile: str, seed: int = 0) -> DDRSSigmas:
    s = settings(profile)
    sigma0 = dict(s.ddrs)[dataset]
    model = cohen2019.cifar_config(sigma0, profile, seed=seed) if dataset == "cifar10" else cohen2019.mnist_config(sigma0, profile, seed)
    return DDRSSigmas(model, sigma0, s.ddrs_lr, s.ddrs_iterations, s.ddrs_samples, dataset, s.every, seed)


def ddrs_table(cfg: DDRSSigmas, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> pd.DataFrame:
    """The stored table of :class:`DDRSSigmas` (``idx``, ``sigma``), by :func:`rsbook.methods.samplewise.ddrs_sigmas`."""
    def compute(out, work):
        t = time.perf_counter()
        data = test_subset(cfg.dataset, cfg.every)
        x = data.images.float().div(255)
        sig = ddrs_sigmas(load_model(cfg.model, profile, device, progress), x, cfg.sigma0, cfg.lr, cfg.iterations, cfg.samples,
                          cfg.seed, device=device)
        pd.DataFrame({"idx": data.indices.tolist(), "sigma": sig}).to_csv(out, sep="\t", index=False)
        return {"images": len(x), "seconds": time.perf_counter() - t}

    path, _ = store(profile).load_or_compute(cfg, compute, "tsv", device=device)
    return pd.read_csv(path, sep="\t")


def certify_config(model, table: pd.DataFrame, dataset: str, profile: str, seed: int = 0) -> CertifyConfig:
    """Cohen's certification of ``model`` with each test image at its level in ``table`` (a :class:`NoiseTable`)."""
    s = settings(profile)
    rule = NoiseTable("gaussian", tuple((int(i), float(sg)) for i, sg in zip(table["idx"], table["sigma"])))
    return CertifyConfig(model=model, noise=None, noise_rule=rule, n0=s.n0, n=s.n, alpha=s.alpha, dataset=dataset, every=s.every,
                         seed=seed)


def certification(model, table: pd.DataFrame, dataset: str, profile: str, device: torch.device | str = "cpu",
                  progress: bool = True, seed: int = 0) -> pd.DataFrame:
    """The certification log of ``model`` at the per-image levels of ``table``, through the runner (stored)."""
    cfg = certify_config(model, table, dataset, profile, seed)
    smooth = smooth_for((CHAPTER, config_key(model), str(store(profile).root), str(device)),
                        lambda: Smooth(load_model(model, profile, device, progress), NUM_CLASSES[dataset]))
    return certification_log(cfg, smooth, test_subset(dataset, cfg.every), store(profile), progress=progress)


def baseline_logs(dataset: str, profile: str, device: torch.device | str = "cpu", progress: bool = True,
                  seed: int = 0) -> dict[float, pd.DataFrame]:
    """Chapter 0's single-sigma models, each smoothed at its own sigma, on the chapter's test images."""
    s, st0 = settings(profile), cohen2019.store(profile)
    out = {}
    for sg in s.grid(dataset):
        cfg = cohen2019.cifar_config(sg, profile, seed=seed) if dataset == "cifar10" else cohen2019.mnist_config(sg, profile, seed)
        out[sg] = cohen2019.certification(cfg, sg, profile, st0, device, progress, every=s.every, seed=seed)
    return out


# -- the three certificates of a per-sample-sigma log ------------------------------------------------------

def _images(dataset: str, idx: np.ndarray) -> torch.Tensor:
    every = int(idx[1] - idx[0]) if len(idx) > 1 else 10_000
    data = test_subset(dataset, every)
    pos = {int(i): j for j, i in enumerate(data.indices.tolist())}
    return data.images[[pos[int(i)] for i in idx]].float().div(255)


def _allocation_inputs(log: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``log`` in image order, its images' pairwise distances and Cohen's radii (0 on abstentions)."""
    log = log.sort_values("idx").reset_index(drop=True)
    dist = pairwise_distances(_images(dataset, log["idx"].to_numpy()))
    return log, dist, np.where(log["predict"].to_numpy() >= 0, log["radius"].to_numpy(), 0.0)


def transductive(log: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per test image of ``log``: Cohen's radius at its own level (``naive``), the LP's allocated radius
    with conflicts between different levels (``lp``, the notes' rule) and between different levels
    *and* classes (``lp_class``), the memory rule in data-set order in the same constraints
    (``memory``), and DDRS's memory step as published (``ddrs``, ``ddrs_predict``). Radii are 0 on
    abstentions; ``correct_*`` mark a right certified class."""
    log, dist, r = _allocation_inputs(log, dataset)
    sig, cls = log["sigma"].to_numpy(), log["predict"].to_numpy()
    lp, lpc, mem = allocate(dist, sig, r), allocate(dist, sig, r, cls, "sigma-and-class"), memory_rule(dist, sig, r)
    dcls, drad = ddrs_memory(dist, cls, r)
    out = pd.DataFrame({"idx": log["idx"], "label": log["label"], "predict": cls, "sigma": sig, "naive": r, "lp": lp.radius,
                        "lp_class": lpc.radius, "memory": mem.radius, "ddrs": drad, "ddrs_predict": dcls})
    out.attrs.update(pairs=lp.pairs, pairs_class=lpc.pairs, nearest=float(np.sort(dist + np.diag(np.full(len(r), np.inf)), 1)[:, 0].min()))
    return out


def order_spread(log: pd.DataFrame, dataset: str, orders: int, seed: int = 0) -> pd.DataFrame:
    """The memory rule's total radius over ``orders`` random orders of the test set, beside the LP's."""
    log, dist, r = _allocation_inputs(log, dataset)
    sig = log["sigma"].to_numpy()
    g = np.random.default_rng(seed)
    totals = [memory_rule(dist, sig, r, order=g.permutation(len(r))).radius.sum() for _ in range(orders)]
    return pd.DataFrame({"order": range(orders), "memory total": totals, "LP total": allocate(dist, sig, r).radius.sum(),
                         "Cohen total": r.sum()})


def inductive(log: pd.DataFrame, dataset: str, lo: float, hi: float, r_max: float = 4.0) -> np.ndarray:
    """Per image, the input-dependent certificate (:func:`rsbook.core.varying.varying_radius`) when every
    input within the radius may be smoothed at any level in ``[lo, hi]``: its radius, ``nan`` where it
    certifies nothing (an abstention, or a worst case at or below 1/2 already at r = 0)."""
    out = np.full(len(log), np.nan)
    for j, (pred, rad, sg) in enumerate(zip(log["predict"], log["radius"], log["sigma"])):
        if pred >= 0:
            res = varying_radius(float(norm.cdf(rad / sg)), float(sg), lo, hi, DIMS[dataset], r_max=r_max)
            out[j] = res.radius if res.certified else np.nan
    return out


@dataclass(frozen=True)
class InductiveConfig:
    """What determines the inductive radii of a certification log (:func:`inductive`): the
    certification and the levels ``[lo, hi]`` the rule may give inside the ball. Stored: each
    certified image is an exact worst-case search."""

    certification: CertifyConfig
    lo: float
    hi: float
    r_max: float = 4.0


def inductive_config(dataset: str, profile: str, seed: int = 0) -> InductiveConfig:
    """The inductive certificate of the fine-tuned model's certification on ``dataset`` over the
    profile's whole level grid (before its level table exists, at a stand-in table, for the plan)."""
    s = settings(profile)
    planned = _planned(finetune_config(dataset, profile, seed), test_sigmas_config(dataset, profile, seed), profile, seed)
    return InductiveConfig(planned.config, min(s.grid(dataset)), max(s.grid(dataset)))


def stored_inductive(cfg: InductiveConfig, log: pd.DataFrame, profile: str) -> np.ndarray:
    """:func:`inductive` of ``log`` (the certification ``cfg.certification``, in image order): loaded
    from the chapter's store, or computed and stored."""
    log = log.sort_values("idx")
    table = stored_table(store(profile), cfg, lambda: pd.DataFrame(
        {"idx": log["idx"].to_numpy(), "radius": inductive(log, cfg.certification.dataset, cfg.lo, cfg.hi, cfg.r_max)}))
    if table["idx"].tolist() != log["idx"].tolist():
        raise ValueError(f"the stored inductive radii at {store(profile).paths(cfg, 'tsv')[0]} are of other images than this "
                         "log's: delete that file to compute them for this log")
    return table["radius"].to_numpy()


@dataclass(frozen=True)
class SpreadConfig:
    """The grid of :func:`spread` (its table is stored: each point is an exact worst-case search
    that costs seconds)."""

    ps: tuple[float, ...] = (0.9, 0.99, 0.999)
    spreads: tuple[float, ...] = (0.001, 0.01, 0.05)
    sigma0: float = 0.25


def spread_config(profile: str) -> SpreadConfig:
    """The page's grid at ``cpu`` and ``paper``; at ``smoke`` and ``dry_run`` the one point its claims
    read (p_A = 0.99, spread 0.01): the same code path, a fraction of the cost."""
    check_profile(profile)
    return SpreadConfig(ps=(0.99,), spreads=(0.01,)) if profile in ("smoke", "dry_run") else SpreadConfig()


def stored_spread(cfg: SpreadConfig, profile: str) -> pd.DataFrame:
    """:func:`spread` on ``cfg``'s grid: loaded from the chapter's store, or computed and stored."""
    return stored_table(store(profile), cfg, lambda: spread(cfg.ps, cfg.spreads, cfg.sigma0))


def spread(ps: tuple[float, ...] = (0.9, 0.99, 0.999), spreads: tuple[float, ...] = (0.001, 0.01, 0.05), sigma0: float = 0.25) -> pd.DataFrame:
    """The inductive radius against Cohen's in d = 784 and 3,072 when the level may vary by a relative
    ``spread`` within the ball (Sukenik et al.'s curse of dimensionality, measured; the page's grid
    per profile: :func:`spread_config`)."""
    rows = []
    for p in ps:
        t = spread_table(p, sigma0, dims=(DIMS["mnist"], DIMS["cifar10"]), spreads=spreads, r_max=4.0)
        t.insert(0, "p_A", p)
        t["Cohen radius"] = sigma0 * norm.ppf(p)
        rows.append(t)
    out = pd.concat(rows, ignore_index=True)
    out["share of Cohen's radius"] = out["radius"] / out["Cohen radius"]
    return out


def summary(curves: dict[str, pd.DataFrame], radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> pd.DataFrame:
    """Certified accuracy at ``radii`` and ACR per method; each value a per-image ``(correct, radius)`` frame."""
    rows = {}
    for name, t in curves.items():
        r = np.where(t["correct"].to_numpy() > 0, t["radius"].to_numpy(), 0.0)
        rows[name] = {**{f"r = {x:g}": float(((t["correct"] > 0) & (t["radius"] >= x)).mean()) for x in radii}, "ACR": float(r.mean())}
    return pd.DataFrame(rows).T


def as_curve(t: pd.DataFrame, column: str, predict: str = "predict") -> pd.DataFrame:
    """A ``(correct, radius)`` frame from a radius column of :func:`transductive`: ``correct`` when the
    certified class (column ``predict``; -1 on abstentions) is the label."""
    ok = t[predict].to_numpy() == t["label"].to_numpy()
    return pd.DataFrame({"correct": ok.astype(int), "radius": t[column].to_numpy()})


def log_curve(log: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"correct": log["correct"].to_numpy(), "radius": log["radius"].to_numpy()})


# -- the worked example: naive per-sample certification is wrong ----------------------------------------

def worked_example(w: float = 0.5, grid: tuple[float, float] = (0.25, 1.0), t: float = 0.25, d: int = 2) -> pd.DataFrame:
    """The slab classifier ``f(z) = 1`` if ``|z_1| <= w`` else 0, smoothed exactly (``p_1 = Phi((w - x_1)/s) -
    Phi((-w - x_1)/s)``), with the chapter's rule (the level of ``grid`` maximizing the soft radius) at
    ``x_0 = 0`` and at its neighbour ``x' = t e_1``. Returns each point's level, class, exact ``p_A`` and
    the three radii (naive, transductive for the test set ``{x_0, x'}``, inductive over the rule's range)."""
    from ..methods.samplewise import soft_radius

    def p1(x1: float, s: float) -> float:
        return float(norm.cdf((w - x1) / s) - norm.cdf((-w - x1) / s))

    rows = []
    for name, x1 in (("x_0", 0.0), ("x'", t)):
        soft = [soft_radius(np.array([1 - p1(x1, s), p1(x1, s)]), s) for s in grid]
        s = grid[int(np.argmax(soft))]
        p = p1(x1, s)
        rows.append({"point": name, "x_1": x1, "sigma (rule)": s, "class": int(p > 0.5), "p_A (exact)": max(p, 1 - p),
                     "naive radius": s * norm.ppf(max(p, 1 - p))})
    out = pd.DataFrame(rows)
    dist = np.array([[0.0, t], [t, 0.0]])
    out["transductive radius"] = allocate(dist, out["sigma (rule)"].to_numpy(), out["naive radius"].to_numpy()).radius
    out["inductive radius"] = [varying_radius(p, s, min(grid), max(grid), d).radius
                               for p, s in zip(out["p_A (exact)"], out["sigma (rule)"])]
    out.attrs.update(distance=t, w=w, grid=grid, d=d)
    return out


# -- published numbers (MACER's paper), context only --------------------------------------------------

MACER_SOURCE = "Zhai et al. (MACER, ICLR 2020), CIFAR-10, ResNet-110, 500 test images, N = 100,000 (the book's notes)"
#: Certified accuracy at r = 0, .25, .5, .75 and ACR as MACER reports them; None where the notes give no value.
MACER_CIFAR10 = {
    "Cohen-0.25": {"r = 0": 0.75, "r = 0.25": 0.60, "r = 0.5": 0.43, "r = 0.75": 0.26, "ACR": 0.416},
    "MACER-0.25": {"r = 0": 0.81, "r = 0.25": 0.71, "r = 0.5": 0.59, "r = 0.75": 0.43, "ACR": 0.556},
    "Cohen-0.50": {"ACR": 0.491}, "MACER-0.50": {"ACR": 0.726}, "Cohen-1.00": {"ACR": 0.458}, "MACER-1.00": {"ACR": 0.792},
}


# -- claims ------------------------------------------------------------------------------------------------

def _radius(t: pd.DataFrame) -> np.ndarray:
    return np.where(t["correct"].to_numpy() > 0, t["radius"].to_numpy(), 0.0)


def claims(profile: str, sw: dict[str, pd.DataFrame], base: dict[str, dict[float, pd.DataFrame]], ddrs: dict[str, pd.DataFrame],
           example: pd.DataFrame, spreads: pd.DataFrame) -> Claims:
    """The chapter's claims table. ``sw[dataset]``: the sample-wise model's transductive (LP) curve
    (``correct``, ``radius``, test images in order); ``base[dataset][sigma]``: chapter 0's logs on the
    same images; ``ddrs[dataset]``: DDRS's curve with its memory step; ``example``: :func:`worked_example`;
    ``spreads``: :func:`spread`."""
    c = Claims(CHAPTER, profile)
    for ds, name in (("cifar10", "CIFAR-10"), ("mnist", "MNIST")):
        logs = {sg: log.sort_values("idx").reset_index(drop=True) for sg, log in base[ds].items()}
        best = max(logs, key=lambda sg: _radius(logs[sg]).mean())
        t, b = sw[ds], logs[best]
        if len(t) != len(b):
            raise ValueError("the sample-wise curve and the baselines must cover the same test images")
        c.qualitative(f"{name}: sample-wise smoothing improves the accuracy-robustness trade-off over one global sigma "
                      "(transductive)", "better trade-off (abstract; its numbers are not public)",
                      f"ACR {_radius(t).mean():.3f} vs {_radius(b).mean():.3f}, clean accuracy {(t['correct'] > 0).mean():.3f} vs "
                      f"{(b['correct'] > 0).mean():.3f} (global sigma {best:g}, the best ACR)",
                      [greater(_radius(t), _radius(b), f"ACR: sample-wise > sigma {best:g}"),
                       greater((t["correct"] > 0).to_numpy().astype(float), (b["correct"] > 0).to_numpy().astype(float),
                               f"clean accuracy: sample-wise > sigma {best:g}")],
                      why=("read as: it dominates the global sigma with the best ACR (higher ACR and higher clean accuracy); "
                           f"{settings(profile).n:,} samples per image, the transductive radius (LP allocation)"),
                      test="Wilcoxon signed-rank on per-image radius (0 if wrong) and sign test on certified-correct at r = 0, "
                           "paired by test image")
    for ds, name in (("cifar10", "CIFAR-10"), ("mnist", "MNIST")):
        sg0 = dict(settings(profile).ddrs)[ds]
        b = base[ds][sg0].sort_values("idx").reset_index(drop=True)
        c.qualitative(f"{name}: DDRS's per-input sigma raises ACR over its fixed-sigma model (Alfarra et al.; related method)",
                      "higher ACR (DDRS, UAI 2022)", f"ACR {_radius(ddrs[ds]).mean():.3f} vs {_radius(b).mean():.3f} (sigma_0 = {sg0:g})",
                      [greater(_radius(ddrs[ds]), _radius(b), f"ACR: DDRS > sigma {sg0:g}")],
                      why="DDRS's memory step as published (transductive, order-dependent); the library's optimizer at the book's settings",
                      test="Wilcoxon signed-rank on per-image radius (0 if wrong), paired by test image")
    x0, xp = example.iloc[0], example.iloc[1]
    wrong = bool(xp["class"] != x0["class"] and example.attrs["distance"] < x0["naive radius"])
    sound = bool(example.attrs["distance"] >= x0["transductive radius"] and example.attrs["distance"] >= x0["inductive radius"])
    c.qualitative("a radius can be certified only if every point within it has the same sigma (naive per-sample "
                  "certification is not a guarantee)", "stated in the introduction",
                  f"x' at distance {example.attrs['distance']:g} < naive radius {x0['naive radius']:.3f} gets class {int(xp['class'])}; "
                  f"transductive radius {x0['transductive radius']:.3f}, inductive {x0['inductive radius']:.3f}",
                  [wrong, sound], why="exact probabilities of the slab classifier (no sampling): the naive certificate is refuted "
                                      "at x', the transductive and inductive ones do not reach it",
                  test="exact: both must hold")
    row = spreads[(spreads["d"] == DIMS["cifar10"]) & (spreads["p_A"] == 0.99) & (np.isclose(spreads["spread"], 0.01))].iloc[0]
    share = row["radius"] / row["Cohen radius"]
    c.qualitative("in d = 3,072 a 1% spread of sigma already costs much of the radius (Sukenik et al.)",
                  "curse of dimensionality (Sukenik et al., ICML 2022)",
                  f"p_A = 0.99, sigma 0.25 ± 1%: radius {row['radius']:.3f} vs Cohen's {row['Cohen radius']:.3f} ({share:.0%}); "
                  f"worst-case p_A at r = 0: {row['worst case at r = 0']:.3f}",
                  [bool(row["radius"] < 0.5 * row["Cohen radius"])],
                  why="read as: less than half of Cohen's radius remains", test="exact (Neyman-Pearson worst case, rsbook.core.varying)")
    pairs = spreads.pivot_table(index=["p_A", "spread"], columns="d", values="radius")
    lo_d, hi_d = DIMS["mnist"], DIMS["cifar10"]
    c.qualitative("the variation of sigma a certificate tolerates shrinks as the dimension grows (Sukenik et al.)",
                  "curse of dimensionality (Sukenik et al., ICML 2022)",
                  "inductive radius in d = 784 vs 3,072 at each (p_A, spread): "
                  + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(pairs[lo_d], pairs[hi_d])),
                  [bool((pairs[lo_d] >= pairs[hi_d]).all()), bool((pairs[lo_d] > pairs[hi_d] + 1e-6).any())],
                  why="every cell no larger in d = 3,072, and at least one smaller", test="exact (rsbook.core.varying)")
    c.not_reproduced_here("the paper's own certified accuracies and ACR", "not public (only the abstract and introduction are)")
    c.not_reproduced_here("SmoothAdv-style adversarial fine-tuning with per-sample sigma",
                          "not run: the chapter's 3-hour cpu budget goes to the Gaussian fine-tuning on both data sets")
    return c


def _planned(model, tcfg, profile: str, seed: int) -> Planned:
    """A planned certification at the levels ``tcfg`` stores; before they exist, at a stand-in table (for the estimate)."""
    s, st = settings(profile), store(profile)
    if st.exists(tcfg, "tsv"):
        table = test_sigmas(tcfg, profile) if isinstance(tcfg, TestSigmas) else ddrs_table(tcfg, profile)
    else:
        table = pd.DataFrame({"idx": [0], "sigma": [1.0]})
    return Planned(certify_config(model, table, tcfg.dataset, profile, seed), pretrain_config(tcfg.dataset, profile).arch,
                   -(-10_000 // s.every))  # both test sets hold 10,000 images


def planned_work(profile: str, seed: int = 0) -> Plan:
    """The chapter's models, level tables and certifications (chapter 0's models are chapter 0's work)."""
    trainings = [pretrain_config("mnist", profile, seed)] + [finetune_config(ds, profile, seed) for ds in DATASETS]
    tables = [(finetune_config(ds, profile, seed), test_sigmas_config(ds, profile, seed)) for ds in DATASETS]
    tables += [(pretrain_config(ds, profile, seed), test_sigmas_config(ds, profile, seed, pretrained_only=True)) for ds in DATASETS]
    tables += [(ddrs_config(ds, profile, seed).model, ddrs_config(ds, profile, seed)) for ds in DATASETS]
    other = ([assignment_config(ds, profile, seed) for ds in DATASETS] + [t for _, t in tables]
             + [inductive_config(ds, profile, seed) for ds in DATASETS] + [spread_config(profile)])
    return Plan(trainings=tuple(trainings), certifications=tuple(_planned(m, t, profile, seed) for m, t in tables), other=tuple(other))
