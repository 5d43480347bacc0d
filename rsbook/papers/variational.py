"""Chapter 4, variational randomized smoothing: settings per profile, the selectors, Experiments A and B, claims.

The paper gives no code. Every choice it leaves open is the book's and labelled so in the
settings below: the selector's layers (:mod:`rsbook.models.selector`), Adam at a cosine rate, the
median-smoothing level ``sigma_m = sigma_a``, the attack's noise copies, and at ``cpu`` the
training subset, epochs, test images and the parts of the paper's grids that are run. Base
classifiers are chapter 0's (loaded, not retrained).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..book.eta import Plan, Planned
from ..book.profiles import chapter_store, check_profile
from ..core.certify import Smooth
from ..core.engine import Item
from ..core.noise import Gaussian
from ..core.streams import stream
from ..core.varying import varying_radius, worst_case
from ..infra.artifacts import ArtifactStore
from ..infra.data import test_subset
from ..methods.dual import DualSettings, dual_certify, selector_draws
from ..methods.median import order_indices
from ..methods.soft import SoftSmoothed, SoftSmoothedLogits
from ..methods.variational import VariationalLogits, pgd_budget
from ..models.classifiers import for_inference
from ..models.selector import FixedInputs
from ..training.classifier import TrainConfig
from ..training.selector import SelectorConfig
from ..training.stored import trained
from . import cohen2019
from .common import smooth_for, stored_table

__all__ = ["CHAPTER", "Settings", "settings", "store", "base_config", "selector_config", "load_classifier", "load_selector", "selector_response",
           "ExperimentA", "experiment_a_config", "experiment_a", "ExperimentB", "experiment_b_config", "experiment_b",
           "planned_work", "certification", "counterexample", "spread_table", "SpreadTableConfig", "spread_table_config", "stored_spread_table", "index_table", "TABLE1", "TABLE2", "claims"]

CHAPTER = "04_variational_smoothing"
D_IMAGE = 3 * 32 * 32

#: The paper's Table 1 (D and lambda per sigma_a) and Table 2 (clipping h_l, h_u per sigma_a, lambda): settings, not results.
TABLE1 = {0.12: ((0.0, 0.05, 0.1, 0.2), (0.0, 0.1, 0.2)), 0.25: ((0.0, 0.05, 0.1, 0.2, 0.3), (0.0, 0.1, 0.2)),
          0.50: ((0.0, 0.05, 0.1, 0.2, 0.3), (0.0,)), 1.00: ((0.0, 0.05, 0.1, 0.2, 0.3, 0.4), (0.0,))}
TABLE2 = {(0.12, 0.0): (0.06, 0.10), (0.12, 0.1): (0.08, 0.11), (0.12, 0.2): (0.09, 0.12), (0.25, 0.0): (0.16, 0.24),
          (0.25, 0.1): (0.18, 0.25), (0.25, 0.2): (0.20, 0.27), (0.50, 0.0): (0.34, 0.48), (1.00, 0.0): (0.68, 1.10)}
PAPER_SOURCE = ("Hase et al., variational randomized smoothing: CIFAR-10, a 4-conv CNN trained 400 epochs, selectors 200 "
                "epochs, N_h = 1,000, alpha_h = 1e-5, N = 1,000, alpha = 1e-3 (figures only; the paper prints no accuracy table)")


@dataclass(frozen=True)
class Settings:
    """Chapter 4's settings at one profile (``*_sigmas``: the base classifiers' sigma_a that each part runs)."""

    a_sigmas: tuple[float, ...]  # Experiment A
    a_lams: tuple[float, ...]
    a_every: int
    b_sigmas: tuple[float, ...]  # Experiment B (fixed sigma_a models)
    b_lams: tuple[float, ...]
    b_baseline: tuple[float, ...]  # sigma_s of the baseline g, as multiples of sigma_a
    b_every: int
    b_gammas: tuple[float, ...]
    b_steps: int
    b_universal_lams: tuple[float, ...]
    b_long_every: int  # Figure 8: the 500-step attack, on fewer images
    train_subset: int
    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    n_f: int = 10  # N_f^tr
    n_h_train: int = 10  # N_h^tr
    n_h: int = 1000  # N_h (certification)
    alpha_h: float = 1e-5
    n0: int = 100
    n: int = 1000
    alpha: float = 1e-3
    n_h_predict: int = 100  # selector draws of g_v^*'s prediction in Experiment B (not given by the paper)
    attack_copies: int = 10  # noise copies of the soft smoothed classifier under attack (not given by the paper)
    max_batches: int = 0
    universal_sigma: float = 1.0
    universal_sigma_a: float = 0.5  # the selector's sigma_a input for the universal model (the paper's)
    clip: bool = True
    b_long_steps: int = 500
    kl: str = "per-dimension"  # the KL's scale (rsbook.methods.variational): the book's reconstruction


_SETTINGS = {
    "smoke": Settings(a_sigmas=(0.25,), a_lams=(0.0,), a_every=2500, b_sigmas=(0.25,), b_lams=(0.0,), b_baseline=(1.0,),
                      b_every=5000, b_gammas=(0.3,), b_steps=3, b_universal_lams=(0.0,), b_long_every=5000, b_long_steps=4, train_subset=256, epochs=1,
                      batch_size=64, n_h=100, n0=10, n=100, alpha_h=1e-3, n_h_predict=10, attack_copies=2, n_f=2, n_h_train=3),
    # the published book: lambda = 0 in Experiment A (20 images), sigma_a = 0.5 in Experiment B (10 images; Fig. 8: 4),
    # selectors on 4,096 images for 2 epochs
    "cpu": Settings(a_sigmas=(0.12, 0.25, 0.50, 1.00), a_lams=(0.0,), a_every=500, b_sigmas=(0.50,), b_lams=(0.0, 0.4),
                    b_baseline=(0.5, 1.0), b_every=1000, b_gammas=(0.1, 0.3), b_steps=200, b_universal_lams=(0.0, 0.4),
                    b_long_every=2500, train_subset=4096, epochs=2, attack_copies=4),
    # the paper's grid (its Tables 1-2 and Figs. 5-9), 200 selector epochs on the whole training set
    "paper": Settings(a_sigmas=(0.12, 0.25, 0.50, 1.00), a_lams=(0.0, 0.1, 0.2), a_every=20, b_sigmas=(0.12, 0.25, 0.50, 1.00),
                      b_lams=(0.0, 0.1, 0.2, 0.3, 0.4), b_baseline=(0.5, 0.75, 1.0, 1.25, 1.5), b_every=20,
                      b_gammas=(0.1, 0.3, 0.5), b_steps=200, b_universal_lams=tuple(round(0.05 * k, 2) for k in range(19)),
                      b_long_every=100, train_subset=0, epochs=200),
}


def settings(profile: str) -> Settings:
    """The settings at ``profile``; ``dry_run`` is ``paper`` with one batch per epoch, one epoch,
    one test image per part, tiny sample sizes and two points of each grid (derived here, so it
    cannot drift from ``paper``)."""
    check_profile(profile)
    if profile == "dry_run":
        p = _SETTINGS["paper"]
        return dataclasses.replace(p, epochs=1, max_batches=1, batch_size=4, train_subset=4, a_every=10_000, b_every=10_000,
                                   b_steps=2, b_long_steps=3, b_long_every=10_000, n_h=50, n0=5, n=20, alpha_h=1e-2, n_h_predict=5, n_f=2, n_h_train=2,
                                   attack_copies=2, a_sigmas=p.a_sigmas[1:2], a_lams=p.a_lams[:2], b_sigmas=p.b_sigmas[1:2],
                                   b_lams=p.b_lams[:2], b_baseline=p.b_baseline[:1], b_gammas=p.b_gammas[:2],
                                   b_universal_lams=p.b_universal_lams[:2])
    return _SETTINGS[profile]


def store(profile: str, recompute: bool = False) -> ArtifactStore:
    return chapter_store(CHAPTER, profile, recompute)


def base_config(sigma_a: float, profile: str, universal: bool = False, seed: int = 0) -> TrainConfig:
    """Chapter 0's CIFAR-10 classifier at ``sigma_a`` (``universal``: the ``U(0, 1)`` model)."""
    if universal:
        return cohen2019.cifar_config(settings(profile).universal_sigma, profile, "universal", seed)
    return cohen2019.cifar_config(sigma_a, profile, seed=seed)


def selector_config(sigma_a: float, profile: str, dual: bool = True, universal: bool = False, seed: int = 0) -> SelectorConfig:
    """The selector of the base model at ``sigma_a`` (``universal``: of the universal model, with
    the paper's ``sigma_a = 0.5`` input), trained with universal lambda, ``sigma_t = 2 sigma_a``, the
    per-dimension KL (the book's reconstruction; see :mod:`rsbook.methods.variational`), and
    for ``dual`` the median of ``N_h^tr`` draws at ``sigma_m = sigma_a`` (the book's choice)."""
    s = settings(profile)
    sa = s.universal_sigma_a if universal else sigma_a
    return SelectorConfig(base=base_config(sigma_a, profile, universal, seed), sigma_a=sa, sigma_t=2 * sa,
                          n_h=s.n_h_train if dual else 0, sigma_m=sa, n_f=s.n_f, lam=None, kl=s.kl, epochs=s.epochs,
                          batch_size=s.batch_size, lr=s.lr, train_subset=s.train_subset, max_batches=s.max_batches, seed=seed)


def load_classifier(cfg: TrainConfig, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> nn.Module:
    return cohen2019.load_model(cfg, cohen2019.store(profile), device, progress)


def load_selector(cfg: SelectorConfig, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> nn.Module:
    """The trained selector (trained and stored first if absent; its classifier comes from chapter 0's store)."""
    return trained(cfg, store(profile), device, progress, store_of=lambda _: cohen2019.store(profile)).eval().requires_grad_(False)


def selector_response(cfg: SelectorConfig, profile: str, device: torch.device | str = "cpu", every: int = 100) -> str:
    """The trained selector's mean output on every ``every``-th test image (one noise draw at its
    input level, the selector stream) at lambda 0 and lambda 1, as ``"a / b"``."""
    x, _, idx = _test(max(every, settings(profile).a_every // 5), device)
    h = load_selector(cfg, profile, device, progress=False)
    out = []
    for lam in (0.0, 1.0):
        draws = selector_draws(FixedInputs(h, cfg.sigma_a, lam), list(x), [stream("selector", cfg.seed, i, device) for i in idx], 1,
                               cfg.sigma_m if cfg.dual else cfg.sigma_a)
        out.append(float(np.mean([d[0] for d in draws])))
    return f"{out[0]:.3f} / {out[1]:.3f}"


def _smooth(cfg: TrainConfig, profile: str, device) -> Smooth:
    return cohen2019.smooth(cfg, cohen2019.store(profile), device)


def _test(every: int, device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    data = test_subset("cifar10", every)
    return (data.images.float() / 255).to(device), data.labels.to(device), data.indices.tolist()


# -- Experiment A: certified accuracy of g_v^* (Figure 5) ----------------------------------------------

@dataclass(frozen=True)
class ExperimentA:
    """One Experiment A log: a dual selector at one lambda, certified at every budget ``D`` with and
    without the paper's clipping, on every ``every``-th test image."""

    selector: SelectorConfig
    lam: float
    Ds: tuple[float, ...]
    clip: tuple[float, float] | None
    n_h: int
    alpha_h: float
    n0: int
    n: int
    alpha: float
    every: int
    seed: int = 0


def experiment_a_config(sigma_a: float, lam: float, profile: str, seed: int = 0) -> ExperimentA:
    s = settings(profile)
    Ds = tuple(D for D in TABLE1[sigma_a][0] if D > 0)
    clip = TABLE2.get((sigma_a, lam)) if s.clip else None
    return ExperimentA(selector_config(sigma_a, profile, True, seed=seed), lam, Ds, clip, s.n_h, s.alpha_h, s.n0, s.n, s.alpha,
                       s.a_every, seed)


def experiment_a(cfg: ExperimentA, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> pd.DataFrame:
    """The log of :class:`ExperimentA` (loaded, or computed and stored): per image, budget ``D`` and
    clipping, the selector's median and interval and the three certificates of
    :func:`rsbook.methods.dual.dual_certify` (``sound_*``, ``three_*``, ``median_*``: class, radius)."""
    def compute(out, work):
        t = time.perf_counter()
        x, y, idx = _test(cfg.every, device)
        h = FixedInputs(load_selector(cfg.selector, profile, device, progress), cfg.selector.sigma_a, cfg.lam)
        st = DualSettings(sigma_m=cfg.selector.sigma_m, n_h=cfg.n_h, alpha_h=cfg.alpha_h, n0=cfg.n0, n=cfg.n, alpha=cfg.alpha)
        draws = selector_draws(h, list(x), [stream("selector", cfg.seed, i, device) for i in idx], cfg.n_h, st.sigma_m)
        gens = lambda j, k: stream("certify", cfg.seed, idx[j], device) if k == 0 else stream("dual", cfg.seed, idx[j], device, k=k)  # noqa: E731
        rows = dual_certify(_smooth(cfg.selector.base, profile, device), list(x), draws, gens, st, cfg.Ds, (None, cfg.clip)
                            if cfg.clip else (None,))
        table = pd.DataFrame([{
            "idx": idx[r.key], "label": int(y[r.key]), "D": r.interval.D, "clipped": r.interval.clip is not None,
            "median": r.interval.median, "lower": r.interval.lower, "upper": r.interval.upper,
            "sound_pred": r.sound.prediction, "sound_radius": r.sound.radius,
            "three_pred": r.three_sigma.prediction, "three_radius": r.three_sigma.radius,
            "median_pred": r.no_attack.prediction, "median_radius": r.no_attack.radius, "samples": r.sound.samples,
        } for r in rows])
        table.to_csv(out, sep="\t", index=False)
        return {"images": len(idx), "seconds": time.perf_counter() - t}

    path, _ = store(profile).load_or_compute(cfg, compute, "tsv", device=device)
    return pd.read_csv(path, sep="\t")


def certification(sigma_a: float, lam: float, profile: str, device: torch.device | str = "cpu", progress: bool = True,
                  seed: int = 0) -> pd.DataFrame:
    """The chapter's certification: Experiment A's log for the dual selector at ``sigma_a`` and ``lam``."""
    return experiment_a(experiment_a_config(sigma_a, lam, profile, seed), profile, device, progress)


def certified_curve(log: pd.DataFrame, which: str, radii: np.ndarray) -> np.ndarray:
    """Certified accuracy at each radius for one certificate column of an Experiment A log (``sound``, ``three``, ``median``)."""
    ok = (log[f"{which}_pred"] == log["label"]).to_numpy()
    r = log[f"{which}_radius"].to_numpy()
    return np.array([(ok & (r >= t)).mean() for t in radii])


# -- Experiment B: empirical clean and robust accuracy (Figures 6-9) -----------------------------------

@dataclass(frozen=True)
class ExperimentB:
    """One Experiment B log: every method's clean and PGD-attacked accuracy for one base model.

    ``selectors``: ``(mono, dual)`` selector configs (either may be ``None``); ``lams`` the lambdas
    of ``g_v`` / ``g_v^*``; ``baseline`` the ``sigma_s`` of the baseline ``g``; ``gammas`` the l2
    budgets; the stronger attack goes through the soft smoothed classifier with ``attack_copies``
    copies (and the selector), the weaker one through ``f`` alone. ``clip`` (the paper's Table 2)
    adds the method ``g_v* clipped``: the dual selector's output clamped to ``[h_l, h_u]`` (Figure 8).
    """

    base: TrainConfig
    sigma_a: float
    mono: SelectorConfig | None
    dual: SelectorConfig | None
    lams: tuple[float, ...]
    baseline: tuple[float, ...]
    gammas: tuple[float, ...]
    steps: int
    attack_copies: int
    n: int
    n_h: int
    clip: tuple[float, float] | None
    every: int
    seed: int = 0


def experiment_b_config(sigma_a: float, profile: str, universal: bool = False, seed: int = 0, long: bool = False) -> ExperimentB:
    """Experiment B for the base model at ``sigma_a`` (``universal``: Figure 9); ``long``: Figure 8's
    ``b_long_steps``-step attack on ``g_v^*`` with and without the clipping of Table 2 (lambda = 0), on
    every ``b_long_every``-th test image."""
    s = settings(profile)
    if long:
        base = base_config(sigma_a, profile, False, seed)
        return ExperimentB(base, sigma_a, None, selector_config(sigma_a, profile, True, seed=seed), (0.0,),
                           tuple(round(m * sigma_a, 4) for m in s.b_baseline), s.b_gammas, s.b_long_steps, s.attack_copies,
                           s.n, s.n_h_predict, TABLE2[(sigma_a, 0.0)], s.b_long_every, seed)
    base = base_config(sigma_a, profile, universal, seed)
    sa = s.universal_sigma_a if universal else sigma_a
    mono = None if universal else selector_config(sigma_a, profile, False, seed=seed)
    dual = selector_config(sigma_a, profile, True, universal, seed)
    gammas = (max(s.b_gammas[-2:]),) if universal and len(s.b_gammas) > 1 else s.b_gammas  # Fig. 9: gamma = 0.3
    return ExperimentB(base, sa, mono, dual, s.b_universal_lams if universal else s.b_lams,
                       tuple(round(m * sa, 4) for m in s.b_baseline), gammas, s.b_steps, s.attack_copies, s.n, s.n_h_predict,
                       None, s.b_every, seed)


def _predict(smooth: Smooth, x: torch.Tensor, sigmas: np.ndarray, gens: list[torch.Generator], n: int) -> np.ndarray:
    """The smoothed classifier's top class per input at its own sigma (the engine's counts, N draws)."""
    items = [Item(j, x[j], gens[j], Gaussian(float(sigmas[j]))) for j in range(len(x))]
    return np.array([int(c[0].argmax()) for _, c in smooth.engine.counts(items, (n,), None, planned=n * len(items))])


def experiment_b(cfg: ExperimentB, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> pd.DataFrame:
    """The log of :class:`ExperimentB` (loaded, or computed and stored): one row per image, method
    (``g``, ``g_v``, ``g_v*``), parameter (``sigma_s`` or lambda), attack (``clean``, ``weak``,
    ``strong``) and budget: the selected ``sigma`` (``g_v*``: the median of ``n_h`` draws) and the
    prediction of the Monte-Carlo majority vote over ``n`` draws."""
    from tqdm import tqdm

    def compute(out, work):
        t0 = time.perf_counter()
        x, y, idx = _test(cfg.every, device)
        f = load_classifier(cfg.base, profile, device, progress)
        smooth = _smooth(cfg.base, profile, device)
        sel = {k: (load_selector(c, profile, device, progress) if c is not None else None)
               for k, c in (("g_v", cfg.mono), ("g_v*", cfg.dual))}
        sel["g_v* clipped"] = sel["g_v*"] if cfg.clip is not None else None
        clip_of = {"g_v* clipped": cfg.clip}
        rows = []
        gens = lambda use, k=0: [stream(use, cfg.seed, i, device, k) for i in idx]  # noqa: E731

        def sigma_of(method: str, param: float, xs: torch.Tensor, k: int) -> np.ndarray:
            if method == "g":
                return np.full(len(xs), param)
            c = cfg.mono if method == "g_v" else cfg.dual
            h = FixedInputs(sel[method], c.sigma_a, param, clip_of.get(method))
            n_h = 1 if method == "g_v" else cfg.n_h
            noise = c.sigma_a if method == "g_v" else c.sigma_m
            d = selector_draws(h, list(xs), gens("selector", k), n_h, noise)
            return np.array([float(np.median(v)) for v in d])

        methods = [("g", s) for s in cfg.baseline] + [(m, lam) for m in ("g_v", "g_v*", "g_v* clipped") if sel[m] is not None
                                                     for lam in cfg.lams]
        weak = {g: pgd_budget(f, x, y, g, cfg.steps) for g in cfg.gammas}  # f alone, shared by every method
        for k, (method, param) in enumerate(tqdm(methods, desc="experiment B", disable=not progress)):
            if method == "g":
                target: nn.Module = SoftSmoothedLogits(SoftSmoothed(f, Gaussian(param), m=cfg.attack_copies))
            else:
                c = cfg.mono if method == "g_v" else cfg.dual
                step = dataclasses.replace(c, n_f=cfg.attack_copies).step_for(f)
                target = VariationalLogits(step, sel[method], param, clip_of.get(method),
                                           torch.Generator(device).manual_seed(cfg.seed + k))
            attacks = [("clean", 0.0, x)] + [("weak", g, weak[g]) for g in cfg.gammas]
            attacks += [("strong", g, pgd_budget(target, x, y, g, cfg.steps)) for g in cfg.gammas]
            for j, (attack, gamma, xa) in enumerate(attacks):
                sig = sigma_of(method, param, xa, 1 + j)
                pred = _predict(smooth, xa, sig, gens("attack", 1 + j), cfg.n)
                rows += [{"idx": i, "label": int(l), "method": method, "param": param, "attack": attack, "gamma": gamma,
                          "sigma": float(sv), "pred": int(p)} for i, l, sv, p in zip(idx, y.tolist(), sig, pred)]
        pd.DataFrame(rows).to_csv(out, sep="\t", index=False)
        return {"images": len(idx), "seconds": time.perf_counter() - t0}

    path, _ = store(profile).load_or_compute(cfg, compute, "tsv", device=device)
    return pd.read_csv(path, sep="\t")


def accuracy_table(log: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (and the mean selected sigma) per method, parameter, attack and budget."""
    log = log.assign(correct=(log["pred"] == log["label"]).astype(float))
    return (log.groupby(["method", "param", "attack", "gamma"])
            .agg(accuracy=("correct", "mean"), sigma=("sigma", "mean"), images=("idx", "nunique")).reset_index())


# -- the plan -----------------------------------------------------------------------------------------

def planned_work(profile: str, seed: int = 0) -> Plan:
    """Every selector, Experiment A log, Experiment B log and the spread table the chapter computes at
    ``profile`` (chapter 0's classifiers are chapter 0's work)."""
    s = settings(profile)
    images = lambda k: -(-10_000 // k)  # noqa: E731
    a = [experiment_a_config(sg, lam, profile, seed) for sg in s.a_sigmas for lam in s.a_lams]
    b = [experiment_b_config(sg, profile, seed=seed) for sg in s.b_sigmas] + [experiment_b_config(0.5, profile, True, seed)]
    b += [experiment_b_config(sg, profile, seed=seed, long=True) for sg in s.b_sigmas]
    sels = {cfg.selector for cfg in a} | {c for cfg in b for c in (cfg.mono, cfg.dual) if c is not None}
    per_image = lambda c: c.n_h + (1 + 4 * len(c.Ds)) * (c.n0 + c.n)  # noqa: E731 -- selector draws + levels
    certs = tuple(Planned(c, c.selector.base.arch, images(c.every), samples=per_image(c)) for c in a)
    return Plan(trainings=tuple(sorted(sels, key=repr)), certifications=certs, other=(*b, spread_table_config(profile)))


# -- the constructed counterexample, and why the sound radius is small ---------------------------------

def counterexample(d: int = D_IMAGE, levels: tuple[float, float, float] = (0.22, 0.25, 0.28), band: tuple[float, float] = (0.230, 0.240),
                   n: int = 1000, alpha: float = 1e-3) -> pd.DataFrame:
    """The norm-band classifier (:class:`~rsbook.models.synthetic.NormBandClassifier`) at its centre:
    its exact band probability at each noise level of the interval ``[levels[0], levels[2]]``
    (chi-square CDFs), so which class the smoothed classifier at ``x`` votes for at each level."""
    from scipy.stats import chi2

    grid = np.unique(np.concatenate([np.linspace(levels[0], levels[2], 25), levels]))
    p_band = chi2.cdf(d * (band[1] / grid) ** 2, d) - chi2.cdf(d * (band[0] / grid) ** 2, d)
    return pd.DataFrame({"sigma": grid, "P(band class)": p_band, "vote": np.where(p_band > 0.5, "band (B)", "other (A)"),
                         "one of the three sigmas": np.isin(grid, levels)})


@dataclass(frozen=True)
class SpreadTableConfig:
    """The grid of :func:`spread_table` (its table is stored: each point is an exact worst-case
    search that costs seconds)."""

    p: float = 0.99
    sigma0: float = 0.25
    dims: tuple[int, ...] = (10, 784, D_IMAGE)
    spreads: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.1)
    r_max: float = 1.0


def spread_table_config(profile: str) -> SpreadTableConfig:
    """The page's grid at ``cpu`` and ``paper``; at ``smoke`` and ``dry_run`` two spreads in two
    dimensions: the same code path, a fraction of the cost."""
    check_profile(profile)
    return SpreadTableConfig(dims=(10, D_IMAGE), spreads=(0.001, 0.1)) if profile in ("smoke", "dry_run") else SpreadTableConfig()


def stored_spread_table(cfg: SpreadTableConfig, profile: str) -> pd.DataFrame:
    """:func:`spread_table` on ``cfg``'s grid: loaded from the chapter's store, or computed and stored."""
    return stored_table(store(profile), cfg, lambda: spread_table(cfg.p, cfg.sigma0, cfg.dims, cfg.spreads, cfg.r_max))


def spread_table(p: float = 0.99, sigma0: float = 0.25, dims: tuple[int, ...] = (10, 784, D_IMAGE),
                 spreads: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.1), r_max: float = 1.0) -> pd.DataFrame:
    """The sound radius for an interval ``sigma0 [1 - s, 1 + s]`` per dimension ``d`` and spread ``s``, and the
    worst case at ``r = 0`` (:func:`rsbook.core.varying.varying_radius`; the page's grid per profile: :func:`spread_table_config`)."""
    rows = []
    for d in dims:
        for s in spreads:
            lo, hi = sigma0 * (1 - s), sigma0 * (1 + s)
            res = varying_radius(p, sigma0, lo, hi, d, r_max=r_max)
            wc0 = float(worst_case(p, sigma0, np.array([lo, hi]), 0.0, d).min())
            rows.append({"d": d, "spread": s, "worst case at r = 0": wc0, "certified": res.certified, "radius": res.radius})
    return pd.DataFrame(rows)


def index_table(n_hs: tuple[int, ...], Ds: np.ndarray, sigma_m: float, alpha_h: float) -> pd.DataFrame:
    """Order-statistic indices as percentiles (``q / N_h``) beside the theoretical ``p_l``, ``p_u`` (Figs. 4(b), 10)."""
    from scipy.stats import norm

    rows = []
    for n_h in n_hs:
        for D in Ds:
            q_l, q_u = order_indices(n_h, float(D), Gaussian(sigma_m), alpha_h)
            rows.append({"N_h": n_h, "D": float(D), "p_u": float(norm.cdf(D / sigma_m)), "p_l": float(norm.cdf(-D / sigma_m)),
                         "q_u / N_h": (q_u / n_h) if q_u else math.nan, "q_l / N_h": (q_l / n_h) if q_l else math.nan})
    return pd.DataFrame(rows)


# -- claims ---------------------------------------------------------------------------------------------

def claims(profile: str, a_logs: dict[tuple[float, float], pd.DataFrame], base_logs: dict[float, pd.DataFrame],
           b_log: pd.DataFrame, u_log: pd.DataFrame, long_log: pd.DataFrame, cex: dict[str, object]):
    """The chapter's claims under the book's rule (:mod:`rsbook.book.claims`).

    ``a_logs`` Experiment A per ``(sigma_a, lam)``; ``base_logs`` chapter 0's logs at ``sigma_s = sigma_a``;
    ``b_log`` / ``u_log`` / ``long_log`` Experiment B's logs (the fixed-sigma models', the universal
    model's, and Figure 8's long attack with and without clipping);
    ``cex`` the constructed counterexample's outcomes.
    """
    from ..book.claims import Claims, greater
    from ..core.metrics import certified_at

    c = Claims(CHAPTER, profile)
    for (sa, lam), log in a_logs.items():
        small = log[(log["D"] == min(log["D"])) & (~log["clipped"])].sort_values("idx")
        base = base_logs[sa].set_index("idx").loc[small["idx"]].reset_index()
        r = 0.0
        ours = (small["median_pred"] == small["label"]).to_numpy() & (small["median_radius"] >= r)
        c.qualitative(f"sigma_a = {sa:g}: g_v* with no attack on h beats g at sigma_s = sigma_a in certified accuracy (Fig. 5)",
                      "better than the baselines", f"r = 0: {ours.mean():.2f} vs {certified_at(base, r).mean():.2f}",
                      [greater(ours.astype(float), certified_at(base, r), "g_v* (no attack on h) > g, r = 0")],
                      test="certified correct at r = 0, paired by image",
                      why=f"{len(small)} images, a briefly trained selector; a guarantee for g at the selected sigma only, not for g_v*")
        three = (small["three_pred"] == small["label"]).to_numpy().astype(float)
        sound = (small["sound_pred"] == small["label"]).to_numpy().astype(float)
        g0 = certified_at(base, 0.0)
        c.qualitative(f"sigma_a = {sa:g}: with the attack on h and small D = {small['D'].iloc[0]:g}, g_v*'s certified accuracy "
                      "stays close to the baselines (Fig. 5)", "close to the baselines (three-sigma rule)",
                      f"r = 0: three-sigma {three.mean():.2f}, sound {sound.mean():.2f}, g {g0.mean():.2f}",
                      [not bool(greater(g0, three, "g > three-sigma g_v*")), not bool(greater(g0, sound, "g > sound g_v*"))],
                      test="per certificate, no significant loss against g at r = 0 (paired sign test): three-sigma, then sound",
                      why=f"{len(small)} images; the three-sigma rule is not a guarantee, the sound certificate is")
    def outcomes(log: pd.DataFrame, method: str, attack: str, gamma: float) -> tuple[float, np.ndarray]:
        """The best parameter's per-image correctness (sorted by image) of ``method`` under one attack."""
        part = log[(log["method"] == method) & (log["attack"] == attack) & (log["gamma"] == gamma)]
        acc = part.assign(ok=part["pred"] == part["label"]).groupby("param")["ok"].mean()
        best = part[part["param"] == acc.idxmax()].sort_values("idx")
        return float(acc.idxmax()), (best["pred"] == best["label"]).to_numpy().astype(float)

    for (sa, gamma), part in b_log[b_log["gamma"] > 0].groupby(["sigma_a", "gamma"]):
        images = part["idx"].nunique()
        (pv, v), (pm, m), (pg, g0) = (outcomes(b_log[b_log["sigma_a"] == sa], k, "strong", gamma) for k in ("g_v*", "g_v", "g"))
        c.qualitative(f"sigma_a = {sa:g}, stronger attack, gamma = {gamma:g}: dual smoothing g_v* is more robust than mono g_v "
                      "(Fig. 7)", "g_v* drops less than g_v",
                      f"robust accuracy {v.mean():.2f} (lambda {pv:g}) vs {m.mean():.2f} (lambda {pm:g})",
                      [greater(v, m, "g_v* > g_v")], test="correct or not per image, paired, each at its best parameter",
                      why=f"{images} images; the best parameter is chosen on the same images")
        c.qualitative(f"sigma_a = {sa:g}, stronger attack, gamma = {gamma:g}: g_v* is more robust than the baseline g (Fig. 8)",
                      "better clean and robust accuracy", f"robust accuracy {v.mean():.2f} (lambda {pv:g}) vs g {g0.mean():.2f} "
                      f"(sigma_s {pg:g})", [greater(v, g0, "g_v* > g")], test="correct or not per image, paired, best parameters",
                      why=f"{images} images; the paper's 500-step attack runs at the paper profile only")
    for (sa, gamma), part in long_log[long_log["gamma"] > 0].groupby(["sigma_a", "gamma"]):
        sub = long_log[long_log["sigma_a"] == sa]
        (pc, vc), (pu, vu), (pg, g0) = (outcomes(sub, k, "strong", gamma) for k in ("g_v* clipped", "g_v*", "g"))
        steps = f"{int(sub['steps'].iloc[0])}-step PGD" if "steps" in sub else "the long attack"
        c.qualitative(f"sigma_a = {sa:g}, {steps}, gamma = {gamma:g}: clipping helps g_v* (Fig. 8)", "clipping is effective",
                      f"robust accuracy clipped {vc.mean():.2f} vs unclipped {vu.mean():.2f} (g: {g0.mean():.2f})",
                      [greater(vc, vu, "clipped > unclipped")], test="correct or not per image, paired",
                      why=f"{sub['idx'].nunique()} images")
    gamma_u = max(u_log["gamma"].unique())
    (pv, v), (pg, g0) = (outcomes(u_log, k, "strong", gamma_u) for k in ("g_v*", "g"))
    c.qualitative(f"universal sigma_a model, gamma = {gamma_u:g}: g_v* is more robust than g (Fig. 9)", "better",
                  f"robust accuracy {v.mean():.2f} (lambda {pv:g}) vs g {g0.mean():.2f} (sigma_s {pg:g})",
                  [greater(v, g0, "g_v* > g")], test="correct or not per image, paired, best parameters",
                  why=f"{u_log['idx'].nunique()} images; chapter 0's universal model is not conditioned on sigma_a")
    c.qualitative("the three-sigma rule is a guarantee (the paper's certificate)", "treated as one",
                  f"constructed classifier: three-sigma certifies R = {cex['three_radius']:.2f}; the vote at x is class B at "
                  f"sigma = {cex['bad_sigma']:.3f} inside the interval; the sound certificate {'abstains' if not cex['sound_certified'] else 'certifies'}",
                  [bool(cex["three_radius"] == 0) or not cex["refuted"]],
                  test="the constructed norm-band classifier (exact chi-square probabilities): certified and refuted")
    c.not_reproduced_here("Appendix C (Figs. 12-14): universal sigma_a training at sigma'_a = 0.25, 0.5, 1.0 and gamma 0.1-0.5",
                          "only sigma'_a = 1 (chapter 0's universal model) exists at cpu; the paper profile's grid covers gamma")
    return c


def as_log(log: pd.DataFrame, which: str) -> pd.DataFrame:
    """One certificate column of an Experiment A log as a certification log (``idx``, ``correct``, ``radius``)."""
    return pd.DataFrame({"idx": log["idx"].to_numpy(), "correct": (log[f"{which}_pred"] == log["label"]).astype(int).to_numpy(),
                         "radius": log[f"{which}_radius"].to_numpy()})


def envelope_curve(log: pd.DataFrame, which: str, radii: np.ndarray, clipped: bool) -> np.ndarray:
    """The paper's Figure 5 curve: at each radius the best certified accuracy over the budgets ``D`` (one clipping)."""
    part = log[log["clipped"] == clipped]
    return np.max([certified_curve(g, which, radii) for _, g in part.groupby("D")], axis=0)


def counterexample_certificates(D: float = 0.2, n_h: int = 1000, alpha_h: float = 1e-5, n: int = 1000, alpha: float = 1e-3,
                                seed: int = 0) -> dict[str, object]:
    """The constructed case through the engine: a linear selector (median ``0.25 + 0.3 w . (x' - x)``, so
    ``[0.25 - 0.3 D, 0.25 + 0.3 D]`` within ``D``) and the norm band ``[0.230, 0.240]`` (class B), certified at
    its centre by :func:`~rsbook.methods.dual.dual_certify`; and the smoothed vote at the neighbour
    ``x' = x - 0.05 w`` whose selector level is 0.235, by Monte Carlo and exactly (chi-square)."""
    from scipy.stats import chi2

    from ..models.synthetic import LinearSelector, NormBandClassifier

    g = torch.Generator().manual_seed(seed)
    x0 = torch.full((3, 32, 32), 0.5)
    w = torch.randn(x0.numel(), generator=g)
    w = w / w.norm()
    selector, band = LinearSelector(x0, w, 0.25, 0.3), NormBandClassifier(x0, 0.230, 0.240, band_class=1, other=0)
    st = DualSettings(sigma_m=0.25, n_h=n_h, alpha_h=alpha_h, n0=100, n=n, alpha=alpha)
    draws = selector_draws(selector, [x0], [stream("selector", seed, 0, "cpu")], n_h, 0.25)
    smooth = Smooth(band, 2)
    (row,) = dual_certify(smooth, [x0], draws, lambda i, k: stream("dual", seed, 0, "cpu", k=k), st, [D])
    xp = x0 - 0.05 * w.reshape(x0.shape)
    bad = float(selector(xp[None]))
    counts = smooth.sample_counts(xp, n, None, stream("audit", seed, 0, "cpu"), noise=bad)
    d = x0.numel()
    exact_b = float(chi2.cdf(d * (0.240 / bad) ** 2, d) - chi2.cdf(d * (0.230 / bad) ** 2, d))
    return {"interval": (row.interval.lower, row.interval.median, row.interval.upper), "D": D,
            "three_pred": row.three_sigma.prediction, "three_radius": row.three_sigma.radius,
            "sound_certified": not row.sound.abstained, "sound_radius": row.sound.radius,
            "bad_sigma": bad, "distance": 0.05, "mc_band": counts[1] / n, "exact_band": exact_b,
            "refuted": bool(exact_b > 0.5 and row.three_sigma.prediction == 0 and row.three_sigma.radius >= 0.05)}
