"""Chapter 3, HeatSmoothing ("Adversarial Boot Camp", Campbell, Finlay & Oberman): settings, configs,
models, certification, attacks and published numbers.

The chapter's models, all of one architecture (:data:`MODELS`):

* ``baseline``: the undefended classifier (chapter 0's recipe without noise; at ``cpu`` it is
  chapter 1's off-the-shelf classifier, loaded from chapter 1's store);
* ``heat``: HeatSmoothing fine-tuned from ``baseline`` (label-free, deterministic), with the
  penalty ``c = h / 2`` that targets the Gaussian average at the certified sigma
  (:func:`rsbook.methods.heat.target_sigma`);
* ``heat_alg1``: the same with Algorithm 1's printed ``c = 1``, which targets ``sigma sqrt(2 n_T)``;
* ``rs``: RandomizedSmoothing, Gaussian augmentation at sigma = 0.1 (chapter 0's training core);
* ``smoothadv``: SmoothAdv (4 PGD steps, eps 0.5) fine-tuned from ``rs`` (Salman et al. train
  from scratch: fine-tuning is this book's budget choice, labelled on the page);
* ``madry``: l2-PGD adversarial training (Madry et al.) fine-tuned from ``baseline``;
* ``madry_heat``: ``madry`` made certifiable by the paper's eq. (10) fine-tuning (Table 4).

Deterministic models (``DETERMINISTIC``) are certified with the class of the model at the clean
input (no selection samples) and Cohen's bound on ``n`` noisy samples; stochastic ones with
Cohen's ``certify``. Published numbers are labelled as such and never used as ours.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..infra.artifacts import ArtifactStore, config_dict, config_key
from ..book.eta import Plan, Planned, announce
from ..book.claims import TIMED
from ..book.profiles import chapter_store, check_profile
from ..core.certify import Smooth
from ..core.noise import Gaussian
from ..runs.runner import CertifyConfig, certification_log
from ..runs.shards import shard_provenance, sharded_table
from ..infra.data import TEST_SIZES, TRAIN_SIZES, test_subset
from ..infra.distributed import world
from ..models.classifiers import for_inference
from ..training.classifier import TrainConfig
from ..training.finetune import AdvConfig, HeatConfig
from ..training.stored import trained
from . import cohen2019, score_denoising
from .common import smooth_for

__all__ = [
    "CHAPTER",
    "MODELS",
    "DETERMINISTIC",
    "ATTACKED",
    "LABELS",
    "Settings",
    "settings",
    "store",
    "model_config",
    "load_model",
    "training_summary",
    "RateProbe",
    "rate_probe",
    "certify_config",
    "certification",
    "RobustnessConfig",
    "robustness_config",
    "robustness",
    "distances",
    "table5",
    "pgd_first_step",
    "audit_table",
    "heat_constant_table",
    "claims",
    "inference_times",
    "planned_work",
    "announce_work",
    "TABLE2",
    "TABLE4",
    "FIGURE4",
    "TABLE5",
    "PAPER_SOURCE",
    "ImageNetHeatRun",
    "imagenet_heat",
]

CHAPTER = "03_heat_smoothing"
MODELS = ("baseline", "heat", "heat_alg1", "rs", "smoothadv", "madry", "madry_heat")
DETERMINISTIC = ("baseline", "heat", "heat_alg1", "madry", "madry_heat")
ATTACKED = ("heat", "smoothadv", "rs", "baseline")
LABELS = {"baseline": "Undefended baseline", "heat": "HeatSmoothing", "heat_alg1": "HeatSmoothing, c = 1 (Algorithm 1 as printed)",
          "rs": "RandomizedSmoothing",
          "smoothadv": "SmoothAdv", "madry": "Adversarially trained", "madry_heat": "Certified adversarially trained"}


@dataclass(frozen=True)
class Settings:
    """Chapter 3's settings at one profile (``every``: certify and attack every k-th test image)."""

    arch: str
    base_epochs: int  # 0: chapter 0's recipe at this profile (cpu, smoke)
    sigma: float
    heat_timesteps: int
    heat_epochs_per_timestep: int
    heat_subset: int  # training images per HeatSmoothing epoch (0: all)
    smoothadv_epochs: int
    smoothadv_m: int
    madry_epochs: int
    madry_steps: int
    t4_subset: int  # training images of the Table 4 fine-tuning (0: all)
    adv_subset: int  # training images per adversarial fine-tuning epoch (0: all)
    every: int
    n0: int
    n: int
    attack_m: int  # noise copies of the soft smoothed classifier under attack
    audit_n: int  # samples of the deployed Monte-Carlo classifier at each adversarial point
    lbound_m: int  # noise samples of the stochastic models' L-bound
    kappa: int = 10
    delta: float = 0.1
    max_batches: int = 0
    alpha: float = 0.001
    attack_eps: float = 4.0
    attack_steps: int = 20
    adv_eps: float = 0.5  # SmoothAdv and Madry: the l2 radius of training attacks
    smoothadv_steps: int = 4
    certify_batch: int | None = None
    batch_size: int = 128  # the fine-tunings' batch (the base models': chapter 0's recipe, 256)
    heat_lr: float = 0.01  # SGD, momentum 0.9, constant (the paper's stated ImageNet optimizer)
    heat_penalty: float | str = "h/2"  # c of the loss: "h/2" targets the average at sigma (rsbook.methods.heat.target_sigma)
    refine_scan: int = 32  # points scanned on each adversarial point's segment, then bisected (rsbook.methods.distances)
    refine_bisect: int = 10
    audit_steps: int = 24  # the audit's distances along each attack direction, up to audit_factor x the radius
    audit_factor: float = 3.0  # the negative control: the same audit of a certificate inflated this much
    audit_alpha: float = 1e-6  # the audit's Monte-Carlo predict: a wrong answer where the certificate holds, at most this often
    timing_n: int = 100  # Table 2: Monte-Carlo samples of the stochastic prediction timed (the paper does not say)


_SETTINGS = {
    # CI: one tiny epoch each, 10 test images, N = 100
    "smoke": Settings(arch="cnn4", base_epochs=0, sigma=0.1, heat_lr=0.001, heat_timesteps=2, heat_epochs_per_timestep=1, heat_subset=256,
                      smoothadv_epochs=1, smoothadv_m=1, madry_epochs=1, madry_steps=2, t4_subset=256, adv_subset=256,
                      every=1000, n0=10, n=100, attack_m=4, audit_n=100, lbound_m=16, kappa=2, attack_steps=5,
                      certify_batch=128, audit_steps=6),
    # the published book on 2 CPU cores (see the chapter for the budget); the audit at 200 samples per
    # point and a step of R / 6 (1,000 samples at R / 8: about 3 h per pair of models, extrapolated from a first run)
    # (HeatSmoothing at lr 0.001: 0.01 diverged within 4 steps on the CNN, measured)
    "cpu": Settings(arch="cnn4", base_epochs=0, sigma=0.1, heat_timesteps=5, heat_epochs_per_timestep=1, heat_subset=10_000,
                    heat_lr=0.001,
                    smoothadv_epochs=1, smoothadv_m=1, madry_epochs=1, madry_steps=4, t4_subset=10_000, adv_subset=0,
                    every=100, n0=100, n=10_000, attack_m=32, audit_n=200, lbound_m=1000, audit_steps=18),
    # the paper: ResNet-34, 200 epochs per timestep, n_T = 5, N = 10,000, m = 100; SmoothAdv and
    # Madry epochs are this book's (the paper trained them from scratch without saying how long)
    "paper": Settings(arch="cifar_resnet34", base_epochs=200, sigma=0.1, heat_timesteps=5, heat_epochs_per_timestep=200,
                      heat_subset=0, smoothadv_epochs=50, smoothadv_m=1, madry_epochs=50, madry_steps=7, t4_subset=0,
                      adv_subset=0, every=20, n0=100, n=10_000, attack_m=100, audit_n=10_000, lbound_m=10_000),
}


def settings(profile: str, n: int = 0, every: int = 0, timing_n: int = 0) -> Settings:
    """The settings at ``profile``; ``dry_run`` is ``paper`` with one batch of 4 per epoch, one epoch per
    fine-tuning, two test images and tiny sample counts (derived, so it cannot drift from ``paper``;
    its HeatSmoothing rate is 1e-4, as a one-batch base model diverges at the paper's 0.01, and its
    Jacobian estimate takes kappa = 2 random projections, the paper's loop with fewer of its
    double-backward passes, and Table 2 times 8 samples, not 100).
    ``n`` and ``every`` (0: the profile's) override the certification's samples and test images,
    ``timing_n`` the samples of Table 2's timed stochastic prediction."""
    check_profile(profile)
    s = _SETTINGS["paper" if profile == "dry_run" else profile]
    if profile == "dry_run":
        s = dataclasses.replace(s, base_epochs=1, heat_timesteps=2, heat_epochs_per_timestep=1, smoothadv_epochs=1,
                                madry_epochs=1, max_batches=1, batch_size=4, heat_subset=4, t4_subset=4, adv_subset=4,
                                every=5000,
                                n0=4, n=16, attack_m=2, audit_n=16, lbound_m=4, attack_steps=3, heat_lr=1e-4, kappa=2,
                                timing_n=8)
    for name, v in (("n", n), ("every", every), ("timing_n", timing_n)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer (0 keeps the profile's), got {v!r}")
    return dataclasses.replace(s, n=n or s.n, every=every or s.every, timing_n=timing_n or s.timing_n)


def store(profile: str, recompute: bool = False) -> ArtifactStore:
    """Chapter 3's artifact store at ``profile`` (one temporary folder per process for ``smoke``/``dry_run``)."""
    return chapter_store(CHAPTER, profile, recompute)


def _train_config(sigma: float, profile: str, seed: int) -> TrainConfig:
    s = settings(profile)
    cfg = cohen2019.cifar_config(sigma, "paper" if profile in ("paper", "dry_run") else profile, seed=seed)
    if profile in ("paper", "dry_run"):  # ResNet-34 for 200 epochs, cosine (the paper gives no schedule)
        batch = s.batch_size if s.max_batches else cfg.batch_size  # a dry run's tiny batch
        cfg = dataclasses.replace(cfg, arch=s.arch, epochs=s.base_epochs, schedule="cosine", batch_size=batch,
                                  train_subset=s.max_batches * batch if s.max_batches else 0)
    return cfg


def model_config(name: str, profile: str, seed: int = 0) -> TrainConfig | HeatConfig | AdvConfig:
    """The config of the chapter's model ``name`` (one of :data:`MODELS`) at ``profile``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    s = settings(profile)
    if name == "baseline":
        return _train_config(0.0, profile, seed)
    if name == "rs":
        return _train_config(s.sigma, profile, seed)
    heat = dict(sigma=s.sigma, kappa=s.kappa, delta=s.delta, max_batches=s.max_batches, batch_size=s.batch_size, lr=s.heat_lr,
                penalty_scale=s.heat_penalty, seed=seed)
    if name in ("heat", "heat_alg1"):
        if name == "heat_alg1":
            heat["penalty_scale"] = 1.0
        return HeatConfig(model_config("baseline", profile, seed), timesteps=s.heat_timesteps,
                          epochs_per_timestep=s.heat_epochs_per_timestep, train_subset=s.heat_subset, **heat)
    adv = dict(eps=s.adv_eps, train_subset=s.adv_subset, max_batches=s.max_batches, batch_size=s.batch_size, seed=seed)
    if name == "smoothadv":
        return AdvConfig(model_config("rs", profile, seed), "smoothadv", steps=s.smoothadv_steps, sigma=s.sigma,
                         m=s.smoothadv_m, epochs=s.smoothadv_epochs, **adv)
    if name == "madry":
        return AdvConfig(model_config("baseline", profile, seed), "pgd", steps=s.madry_steps, epochs=s.madry_epochs, **adv)
    # Table 4: the paper's eq. (10) (softmax match, noise on half the batch), one fine-tuning pass
    return HeatConfig(model_config("madry", profile, seed), timesteps=1, epochs_per_timestep=1, imagenet_variant=True,
                      train_subset=s.t4_subset, **heat)


def training_summary(profile: str, seed: int = 0) -> pd.DataFrame:
    """Per stored model: what it starts from, its training images and epochs, and its measured
    training time (from the artifact's history; the base models' own time is not included)."""
    rows = []
    for name in MODELS:
        cfg = model_config(name, profile, seed)
        st = _store_of(cfg, profile)
        if not st.exists(cfg, "pt"):
            continue
        hist = st.metadata(cfg, "pt").get("history") or [{}]
        start = ("random init" if isinstance(cfg, TrainConfig)
                 else LABELS[next(k for k in MODELS if model_config(k, profile, seed) == cfg.base)])
        rows.append({"model": LABELS[name], "starts from": start,
                     "training": type(cfg).__name__ if not isinstance(cfg, AdvConfig) else f"AdvConfig ({cfg.method})",
                     "images per epoch": cfg.train_subset or TRAIN_SIZES["cifar10"], "epochs": len(hist),
                     "seconds": sum(h.get("seconds", 0.0) for h in hist),
                     "ms per image": 1000 * sum(h.get("seconds", 0.0) for h in hist)
                     / (len(hist) * (cfg.train_subset or TRAIN_SIZES["cifar10"])),
                     "last epoch": ", ".join(f"{k} {v:.3f}" for k, v in hist[-1].items() if k not in ("epoch", "seconds", "lr"))})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class RateProbe:
    """A short HeatSmoothing fine-tuning at one learning rate: whether its loss stayed finite."""

    lr: float
    batches: int
    diverged_at: int | None  # the batch (1-based) where the loss stopped being finite, or None
    last_loss: float | None  # the mean loss of the probe where it did not diverge

    def sentence(self) -> str:
        """The outcome in words."""
        if self.diverged_at is not None:
            return (f"at lr = {self.lr:g} the loss stopped being finite at batch {self.diverged_at} of {self.batches}, "
                    "so the trainer stopped the run (nothing was stored)")
        return f"at lr = {self.lr:g} the loss stayed finite for {self.batches} batches (mean loss {self.last_loss:.4g})"


def rate_probe(profile: str, lr: float, batches: int = 7, device: torch.device | str = "cpu", seed: int = 0) -> RateProbe:
    """Fine-tune the baseline with HeatSmoothing at ``lr`` for up to ``batches`` batches (one timestep,
    not stored) on the training images that ship with the package, and report whether the loss stayed finite."""
    from ..infra.data import EMBEDDED_TRAIN
    from ..training.finetune import finetune

    bs = settings(profile).batch_size
    batches = max(1, min(batches, EMBEDDED_TRAIN // bs))
    cfg = dataclasses.replace(model_config("heat", profile, seed), lr=lr, timesteps=1, max_batches=batches, train_subset=batches * bs)
    base = _trained(cfg.base, profile, device, progress=False)
    try:
        _, hist = finetune(cfg, base, device=device, progress=False)
    except FloatingPointError as exc:
        at = re.search(r"batch (\d+)", str(exc))
        return RateProbe(lr, batches, int(at.group(1)) if at else 0, None)
    return RateProbe(lr, batches, None, float(hist[-1]["loss"]))


def _store_of(cfg, profile: str) -> ArtifactStore:
    """Where ``cfg`` is stored: chapter 1's or chapter 0's store if it is there (the baseline is
    chapter 1's off-the-shelf classifier at ``cpu``), else this chapter's."""
    if isinstance(cfg, TrainConfig):
        for other in (score_denoising.store(profile), cohen2019.store(profile)):
            if other.exists(cfg, "pt"):
                return other
    return store(profile)


def _trained(cfg, profile: str, device, progress: bool) -> nn.Module:
    return trained(cfg, _store_of(cfg, profile), device, progress, store_of=lambda c: _store_of(c, profile))


def load_model(name: str, profile: str, device: torch.device | str = "cpu", seed: int = 0, progress: bool = True) -> nn.Module:
    """The model ``name`` at ``profile`` ready for inference, loaded from its store (trained first,
    with every model it starts from, if absent)."""
    return for_inference(_trained(model_config(name, profile, seed), profile, device, progress))


# -- certification (Figure 1(a), Table 4) ---------------------------------------------------------


def certify_config(name: str, profile: str, seed: int = 0, s: Settings | None = None) -> CertifyConfig:
    """The certification of model ``name`` at Gaussian sigma = ``s.sigma``: the clean-input class
    (no selection samples) for deterministic models, Cohen's selection with ``n0`` otherwise."""
    s = s or settings(profile)
    return CertifyConfig(model=model_config(name, profile, seed), noise=Gaussian(s.sigma), n0=s.n0, n=s.n, alpha=s.alpha,
                         dataset="cifar10", every=s.every, seed=seed,
                         selection="clean" if name in DETERMINISTIC else "noise")


def _smooth(name: str, profile: str, device, seed: int, progress: bool) -> Smooth:
    """The one :class:`Smooth` of model ``name`` (:func:`rsbook.papers.common.smooth_for`)."""
    return smooth_for((CHAPTER, name, profile, str(device), seed),
                      lambda: Smooth(load_model(name, profile, device, seed, progress), 10))


def certification(name: str, profile: str, device: torch.device | str = "cpu", progress: bool = True, seed: int = 0,
                  s: Settings | None = None) -> pd.DataFrame:
    """The certification log of model ``name`` (loaded, or computed resumably through the engine and stored)."""
    s = s or settings(profile)
    cfg = certify_config(name, profile, seed, s)
    return certification_log(cfg, _smooth(name, profile, device, seed, progress), test_subset("cifar10", cfg.every),
                             store(profile), batch_size=s.certify_batch, progress=progress)


# -- attacks, L-bound and the certificate audit (Table 5, Figure 5) -------------------------------


@dataclass(frozen=True)
class RobustnessConfig:
    """What determines a model's attack log: the model, the attacks, their refinement, and the audit.

    * The attacks: foolbox's PGD and DDN (``steps``, ``eps``); a stochastic model is attacked through
      the soft smoothed classifier with ``attack_m`` copies.
    * The refinement (:func:`~rsbook.methods.distances.segment_boundary`, ``refine_scan`` points and
      ``refine_bisect`` halvings) of every adversarial point's distance along its segment, on the
      attacked model (for a stochastic model with ``attack_m`` draws fixed per image).
    * The L-bound from the softmax of a deterministic model, or from the soft smoothed classifier
      with ``lbound_m`` draws.
    * The audit (when ``certify`` names the certification whose radii are audited): along each
      attack's direction, the certified classifier (the smoothed classifier, by Monte-Carlo
      ``predict`` with ``audit_n`` draws at ``audit_alpha``) at ``audit_steps`` distances up to
      ``audit_factor`` times the certified radius (:mod:`rsbook.methods.audit`).

    Every image draws its noise from its own named streams (:mod:`rsbook.core.streams`), so a row
    does not depend on the other images and torchrun ranks split the images.
    """

    model: TrainConfig | HeatConfig | AdvConfig
    stochastic: bool
    sigma: float = 0.1
    eps: float = 4.0
    steps: int = 20
    attack_m: int = 100
    audit_n: int = 1000
    lbound_m: int = 1000
    alpha: float = 0.001
    every: int = 100
    seed: int = 0
    refine_scan: int = 32
    refine_bisect: int = 10
    certify: CertifyConfig | None = None
    audit_steps: int = 24
    audit_factor: float = 3.0
    audit_alpha: float = 1e-6


def robustness_config(name: str, profile: str, seed: int = 0, s: Settings | None = None) -> RobustnessConfig:
    """The attack log's config of model ``name`` at ``profile`` (audited against its certification)."""
    s = s or settings(profile)
    return RobustnessConfig(model_config(name, profile, seed), name not in DETERMINISTIC, s.sigma, s.attack_eps,
                            s.attack_steps, s.attack_m, s.audit_n, s.lbound_m, s.alpha, s.every, seed,
                            s.refine_scan, s.refine_bisect, certify_config(name, profile, seed, s), s.audit_steps,
                            s.audit_factor, s.audit_alpha)


def _robustness_log(cfg: RobustnessConfig, model: nn.Module, smooth: Smooth, radius: dict[int, float], device, progress: bool,
                    positions: list[int] | None = None) -> pd.DataFrame:
    """Per test image (those at ``positions`` of the test subset; all by default): the clean prediction
    of the deployed classifier, the L-bound, per attack the distance found, its refinement and the
    audit's first wrong answer of the certified classifier (``inf``: none within ``audit_factor`` x
    the radius in ``radius``, keyed by image)."""
    from ..core.engine import Item
    from ..core.streams import stream
    from ..methods.audit import first_wrong_on_grid
    from ..methods.distances import ATTACKS, adversarial_distances, segment_boundary
    from ..methods.heat import l_bound
    from ..methods.soft import FixedNoiseSoft, SoftSmoothed, SoftSmoothedLogits
    from tqdm import tqdm

    data = test_subset("cifar10", cfg.every)
    keep = slice(None) if positions is None else torch.as_tensor(positions, dtype=torch.long)
    x, y = (data.images[keep].float() / 255).to(device), data.labels[keep].to(device)
    idx = data.indices[keep].tolist()

    def streams(use: str, k: int = 0) -> list[torch.Generator]:
        return [stream(use, cfg.seed, i, device, k) for i in idx]

    clean = streams("clean")
    if cfg.stochastic:
        pred = [c for _, c in smooth.predict_many([Item(j, x[j], clean[j]) for j in range(len(idx))], cfg.audit_n, cfg.alpha, None)]
    else:
        with torch.no_grad():
            pred = model(x).argmax(1).tolist()
    out = pd.DataFrame({"idx": idx, "label": y.tolist(), "clean_pred": pred})
    if cfg.stochastic:
        big = SoftSmoothed(model, Gaussian(cfg.sigma), m=cfg.lbound_m)
        lb = streams("lbound")
        with torch.no_grad():
            probs = torch.cat([_with(big, lb[j:j + 1], x[j:j + 1]) for j in range(len(x))])
    else:
        with torch.no_grad():
            probs = model(x).softmax(1)
    out["l_bound"] = l_bound(probs, cfg.sigma).tolist()
    soft = SoftSmoothed(model, Gaussian(cfg.sigma), m=cfg.attack_m)
    attacked = SoftSmoothedLogits(soft) if cfg.stochastic else model
    reach = np.array([cfg.audit_factor * radius.get(i, 0.0) for i in idx])
    for k, name in enumerate(tqdm(ATTACKS, desc="attacks", disable=not progress)):
        per_image = streams("attack", k)

        def batch_noise(rows: slice) -> None:  # each image of the batch draws from its own generator
            soft.generator = per_image[rows]

        dist, adv = adversarial_distances(attacked, name, x, y, cfg.eps, cfg.steps, batch_size=max(1, 3200 // cfg.attack_m)
                                          if cfg.stochastic else 100, on_batch=batch_noise if cfg.stochastic else None)
        if cfg.stochastic:
            fixed = FixedNoiseSoft(model, Gaussian(cfg.sigma), cfg.attack_m, streams("refine", k), tuple(x.shape[1:]), device)
            classify = fixed
            chunk = max(1, 4096 // cfg.attack_m)
        else:
            classify, chunk = (lambda points, rows: model(points).argmax(1)), 1024  # noqa: E731
        refined, resolution = segment_boundary(classify, x, adv, y, cfg.refine_scan, cfg.refine_bisect, chunk)
        refined = torch.where(torch.isnan(refined), dist, refined)  # not misclassified with the fixed draws: the attack's own
        out[name] = dist.tolist()
        out[f"{name}_refined"] = refined.tolist()
        out[f"{name}_resolution"] = torch.where(torch.isfinite(dist), resolution, torch.zeros_like(resolution)).tolist()
        if cfg.certify is not None:
            audit_gen = lambda j, step: stream("audit", cfg.seed, idx[j], device, k, sub=step)  # noqa: E731

            def answer(queries: list[tuple[int, int, torch.Tensor]]) -> list[int]:
                items = [Item(q, point, audit_gen(j, step)) for q, (j, step, point) in enumerate(queries)]
                return [c for _, c in smooth.predict_many(items, cfg.audit_n, cfg.audit_alpha, None)]

            wrong_at, asked = first_wrong_on_grid(answer, x, adv - x, reach, y.tolist(), cfg.audit_steps)
            out[f"{name}_audit"] = wrong_at
            out[f"{name}_audit_calls"] = asked  # predict calls for this image
    out["radius"] = [radius.get(i, 0.0) for i in idx]
    return out


def _certified_radii(log: pd.DataFrame) -> dict[int, float]:
    """The audited radius per image: the certified radius where the certificate is correct, else 0."""
    return {int(i): (float(r) if c == 1 else 0.0) for i, r, c in zip(log["idx"], log["radius"], log["correct"])}


def robustness(name: str, profile: str, device: torch.device | str = "cpu", progress: bool = True, seed: int = 0,
               s: Settings | None = None) -> pd.DataFrame:
    """Model ``name``'s attack log (loaded, or computed and stored): per test image ``clean_pred``,
    ``l_bound``, ``radius`` (certified, 0 where not certified correct) and for ``pgd`` and ``ddn`` the
    adversarial distance found, ``<attack>_refined`` and its ``<attack>_resolution``, and
    ``<attack>_audit``, the distance of the certified classifier's first wrong answer along the
    attack's direction (``inf``: none up to ``audit_factor`` times the radius)."""
    cfg = robustness_config(name, profile, seed, s)
    model = load_model(name, profile, device, seed, progress)
    smooth = Smooth(model, 10, noise=("gaussian", cfg.sigma))
    radius = _certified_radii(certification(name, profile, device, progress, seed, s))

    def compute(out, work):
        t = time.perf_counter()
        images = test_subset("cifar10", cfg.every).indices.tolist()
        log = sharded_table(work / "log.tsv", images, lambda pos: _robustness_log(cfg, model, smooth, radius, device, progress, pos),
                            {"key": config_key(cfg), "config": config_dict(cfg)}, device)
        if world().main:
            log.to_csv(out, sep="\t", index=False)
        return {"images": len(log), "seconds": time.perf_counter() - t, **shard_provenance(work / "log.tsv")}

    path, _ = store(profile).load_or_compute(cfg, compute, "tsv", device=device, sharded=True)
    return pd.read_csv(path, sep="\t")


def _with(soft, generators: list[torch.Generator], x: torch.Tensor) -> torch.Tensor:
    """``soft(x)`` with ``generators`` (one per input) for this call."""
    soft.generator = generators
    return soft(x)


def distances(rob: pd.DataFrame, attack: str) -> np.ndarray:
    """Per image, in the order of ``idx``: the refined adversarial distance of ``attack``, 0 where the
    deployed classifier misclassifies (or abstains on) the clean image."""
    rob = rob.sort_values("idx")
    ok = rob["clean_pred"].to_numpy() == rob["label"].to_numpy()
    return np.where(ok, rob[f"{attack}_refined"].to_numpy(), 0.0)


def table5(rob: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Table 5, ours: over the images each model classifies correctly, the L-bound and the refined PGD
    and DDN distances (median and mean), what the attacks did not find, the coarse PGD distance's
    first-step share, and the refinement's resolution (the largest over the images)."""
    rows = {}
    for name, r in rob.items():
        ok = r[r["clean_pred"] == r["label"]]
        row = {"images correct": len(ok), "L-bound median": ok["l_bound"].median(), "L-bound mean": ok["l_bound"].mean()}
        for a in ("pgd", "ddn"):
            d = ok[f"{a}_refined"].to_numpy()
            row[f"{a.upper()} median"] = float(np.median(d))
            row[f"{a.upper()} mean"] = float(d[np.isfinite(d)].mean()) if np.isfinite(d).any() else np.nan
            row[f"{a.upper()} not found"] = int((~np.isfinite(d)).sum())
            row[f"{a.upper()} resolution"] = float(ok[f"{a}_resolution"].max())
        rows[LABELS[name]] = row
    return pd.DataFrame(rows).T


def pgd_first_step(rob: pd.DataFrame, step: float) -> int:
    """Correct images whose unrefined PGD distance is at most one step: broken at PGD's first step."""
    ok = rob[rob["clean_pred"] == rob["label"]]
    return int((ok["pgd"] <= step + 1e-6).sum())


def audit_table(rob: dict[str, pd.DataFrame], factor: float, audit_alpha: float) -> pd.DataFrame:
    """The certificate audit per model (:mod:`rsbook.methods.audit`): certified images, and for each
    classifier the violations (a wrong answer closer than the certified radius along a PGD or DDN
    direction) and the negative control's (closer than ``factor`` times the radius).

    The certified classifier is the smoothed one (Monte-Carlo ``predict`` at ``audit_alpha``: its
    expected false alarms are calls x ``audit_alpha``). A deterministic model's deployed classifier is
    the network itself, audited at the refined adversarial distance (exact to the refinement's
    resolution); a stochastic model's deployed classifier is the smoothed one.
    """
    from ..methods.audit import audit_counts

    rows = {}
    for name, r in rob.items():
        radius = r["radius"].to_numpy()
        certified = np.minimum(r["pgd_audit"].to_numpy(), r["ddn_audit"].to_numpy())
        c = audit_counts(radius, certified, factor)
        row = {"kind": "deterministic" if name in DETERMINISTIC else "stochastic", "certified (r > 0)": c["certified"],
               "largest radius": float(radius.max())}
        if name in DETERMINISTIC:
            network = np.minimum(r["pgd_refined"].to_numpy(), r["ddn_refined"].to_numpy())
            d = audit_counts(radius, network, factor)
            row.update({"network: violations": d["violations"], "network: control violations": d["control violations"]})
        else:
            row.update({"network: violations": np.nan, "network: control violations": np.nan})
        calls = int(r["pgd_audit_calls"].sum() + r["ddn_audit_calls"].sum())
        row.update({"smoothed: violations": c["violations"], "smoothed: control violations": c["control violations"],
                    "predict calls": calls, "expected false alarms": calls * audit_alpha})
        rows[LABELS[name]] = row
    return pd.DataFrame(rows).T


def heat_constant_table(sigma: float, timesteps: int, penalties: tuple = ("h/2", "h", 1.0)) -> pd.DataFrame:
    """For each penalty ``c``: the smoothing level it targets (:func:`~rsbook.methods.heat.target_sigma`), and
    the level HeatSmoothing's own loss reaches on the closed-form cosine case
    (:func:`~rsbook.methods.heat.cosine_heat_flow`, read off through ``exp(-s^2 / 2)``)."""
    from ..methods.heat import cosine_heat_flow, penalty_constant, target_sigma

    rows = []
    for pen in penalties:
        c = penalty_constant(pen, timesteps)
        amp = cosine_heat_flow(sigma, timesteps, pen)
        rows.append({"penalty c": f"{pen}" if isinstance(pen, str) else f"{pen:g}", "c": c,
                     "targeted level sigma sqrt(2 n_T c)": target_sigma(sigma, timesteps, pen),
                     "closed form, n_T implicit steps: amplitude": (1 + c * sigma**2) ** -timesteps,
                     "trained with the loss: amplitude": amp, "level reached": float(np.sqrt(-2 * np.log(amp)))})
    table = pd.DataFrame(rows)
    table.attrs["sigma"] = sigma
    return table


CLAIM_RADII = (0.05, 0.15, 0.25)  # Figure 1(a)'s comparison: radii well inside the cap of N = 10,000 at sigma = 0.1
DISTANCE_MARGIN = 0.05  # Table 5's distances: a 4-layer CNN is not the paper's ResNet-34 (distances lie in [0, eps])
LBOUND_MARGIN = 0.01  # the L-bound lies in [0, sigma sqrt(pi / 2)] = [0, 0.125] at sigma = 0.1


def claims(profile: str, s: Settings, logs: dict[str, pd.DataFrame], rob: dict[str, pd.DataFrame], audit: pd.DataFrame,
           toy: pd.DataFrame, constants: pd.DataFrame, times: dict[str, float], timing_n: int) -> "Claims":
    """The chapter's claims table under the book's rule (:mod:`rsbook.book.claims`)."""
    from ..book.claims import Check, Claims, exact, greater, median
    from ..core.metrics import certified_at

    c = Claims(CHAPTER, profile)
    images = len(logs["heat"])
    checks = [greater(certified_at(logs["heat"], r), certified_at(logs[k], r), f"HeatSmoothing > {LABELS[k]} at r = {r:g}")
              for k in ("rs", "smoothadv") for r in CLAIM_RADII]
    c.qualitative("HeatSmoothing's certified accuracy outperforms the stochastic models (Figure 1(a))", "outperforms (plot only)",
                  ", ".join(f"r = {r:g}: {certified_at(logs['heat'], r).mean():.2f} vs {certified_at(logs['rs'], r).mean():.2f} / "
                            f"{certified_at(logs['smoothadv'], r).mean():.2f}" for r in CLAIM_RADII), checks,
                  test="certified or not per image, paired", why=f"{images} images, a 4-layer CNN and a short fine-tuning")
    for k in ATTACKED:
        ok = rob[k][rob[k]["clean_pred"] == rob[k]["label"]]
        for a, col in (("PGD", "pgd"), ("DDN", "ddn")):
            c.numeric(f"{LABELS[k]}: {a} median distance (Table 5)", TABLE5[LABELS[k]][col][0], median(ok[f"{col}_refined"]),
                      margin=DISTANCE_MARGIN, fmt="{:.3f}",
                      why="a CNN4 fine-tuned briefly vs the paper's ResNet-34; distances refined to the resolution of Table 5")
        if TABLE5[LABELS[k]]["l_bound"]:
            c.numeric(f"{LABELS[k]}: L-bound median (Table 5)", TABLE5[LABELS[k]]["l_bound"][0], median(ok["l_bound"]),
                      margin=LBOUND_MARGIN, fmt="{:.3f}", why="the L-bound lies in [0, 0.125] here")
    robust = [greater(distances(rob["heat"], a), distances(rob[k], a), f"HeatSmoothing > {LABELS[k]}, {a.upper()}")
              for a in ("pgd", "ddn") for k in ("rs", "smoothadv")]
    c.qualitative("HeatSmoothing outperforms the stochastic models in robustness to PGD and DDN (Table 5)",
                  "larger distances (but for the mean PGD distance)",
                  ", ".join(f"{a.upper()} medians {np.median(distances(rob['heat'], a)):.3f} vs {np.median(distances(rob['rs'], a)):.3f} / "
                            f"{np.median(distances(rob['smoothadv'], a)):.3f}" for a in ("pgd", "ddn")), robust,
                  test="refined distances per image, 0 where the clean image is misclassified")
    paper_ratio = TABLE2["Stochastic (Cohen et al., 2019)"]["CIFAR-10 CPU"] / TABLE2["Deterministic (ours)"]["CIFAR-10 CPU"]
    other = {k: TABLE2["Stochastic (Cohen et al., 2019)"][k] / TABLE2["Deterministic (ours)"][k] for k in TABLE2["Deterministic (ours)"]}
    c.numeric("inference about 10x faster: CIFAR-10 on CPU, ratio stochastic / deterministic (Table 2)", paper_ratio,
              exact(times["ratio"], TIMED), comparable=False, fmt="{:.1f}",
              why=f"the ratio grows with the stochastic n (here {timing_n}; the paper's is not given). The paper's other "
                  "settings give " + ", ".join(f"{v:.1f}x ({k})" for k, v in other.items() if k != "CIFAR-10 CPU"))
    r = lambda k: np.where(logs[k].sort_values("idx")["correct"].to_numpy() == 1, logs[k].sort_values("idx")["radius"].to_numpy(), 0.0)  # noqa: E731
    c.qualitative("HeatSmoothing fine-tuning makes an adversarially trained model certifiably robust (Table 4)",
                  f"median radius {TABLE4['Adversarially trained'][0]:.3f} -> {TABLE4['Certified adversarially trained'][0]:.3f} "
                  "(ImageNet)", f"median radius {np.median(r('madry')):.3f} -> {np.median(r('madry_heat')):.3f} "
                  "(CIFAR-10)", [greater(r("madry_heat"), r("madry"), "certified radius after > before")],
                  test="radius per image, 0 where wrong or abstained",
                  why="one pass of eq. (10) on 10,000 images, of a model adversarially trained for one epoch")
    for k, label in (("heat", "HeatSmoothing"), ("baseline", "the undefended baseline")):
        row = audit.loc[LABELS[k]]
        c.qualitative(f"the certificate of {label} holds for the network itself (audit; the paper certifies the network)",
                      "implied by certifying v", f"network wrong inside R at {row['network: violations']} of "
                      f"{row['certified (r > 0)']} certified images", [_audit_check(row, "network")],
                      test="violation: the network wrong closer than R along a PGD or DDN direction")
    for k in ATTACKED:
        row = audit.loc[LABELS[k]]
        c.qualitative(f"{LABELS[k]}: the certificate holds for the smoothed classifier it certifies (audit)", "(theory)",
                      f"{row['smoothed: violations']} violations in {row['certified (r > 0)']} certified images",
                      [_audit_check(row, "smoothed")],
                      test=f"Monte-Carlo predict closer than R; expected false alarms {row['expected false alarms']:.2g}")
    first, last = toy.iloc[0], toy.iloc[-1]
    c.qualitative("Figures 3-4: the update removes the outlier's boundary and moves it away from any boundary",
                  f"{FIGURE4[0]:.2f} -> {FIGURE4[1]:.2f} (the paper's own toy)",
                  f"{first['adversarial distance of x = -0.5']:.2f} -> {last['adversarial distance of x = -0.5']:.2f}; "
                  f"f(-0.5): {first['f^k(-0.5)']:.2f} -> {last['f^k(-0.5)']:.2f}",
                  [bool(last["f^k(-0.5)"] * first["f^k(-0.5)"] < 0),
                   bool(last["adversarial distance of x = -0.5"] > first["adversarial distance of x = -0.5"])],
                  test="exact on a grid: the outlier's sign flips, and its distance grows from step 0 to the last")
    alg1 = constants[constants["penalty c"] == "1"].iloc[0]
    c.qualitative("Algorithm 1 (c = 1) smooths at the certified sigma", "sigma (eq. (6) at t = 1)",
                  f"the loss on the closed-form case reaches {alg1['level reached']:.3f} for sigma = {constants.attrs['sigma']:g} "
                  f"(target sigma sqrt(2 n_T c) = {alg1['targeted level sigma sqrt(2 n_T c)']:.3f})",
                  [abs(alg1["level reached"] / constants.attrs["sigma"] - 1) < 0.05],
                  test="within 5 % of sigma; c = h/2 (eqs. (11)-(14)) is the setting that does, and this chapter trains with it")
    c.not_reproduced_here("Figure 1(b) and the ImageNet top-5 accuracy: ImageNet top-5 certified and clean accuracy",
                          "needs ImageNet and a GPU (the ImageNet path runs where a reader supplies the data: imagenet_root); "
                          "CIFAR-10 has 10 classes, so this chapter reports top-1")
    c.not_reproduced_here("Table 3 and Figure 2: ImageNet adversarial distances and attack curves", "needs ImageNet and a GPU")
    c.not_reproduced_here("Table 4 on ImageNet (Madry et al.'s ResNet-50, top-5)", "ImageNet; run here as its CIFAR-10 analogue")
    return c


def _audit_check(row: pd.Series, who: str) -> "Check":
    """An audit's verdict: it holds with no violation, fails with one, and is undecided when its
    negative control found nothing (an audit that cannot find a violation audits nothing)."""
    from ..book.claims import Check

    v, ctrl = row[f"{who}: violations"], row[f"{who}: control violations"]
    if v > 0:
        return Check(False, f"{who}: {v} violations (control {ctrl})")
    if ctrl == 0:
        return Check(None, f"{who}: the control (radius x factor) found no violation either, so the audit cannot fail here")
    return Check(True, f"{who}: 0 violations; the control found {ctrl}")


# -- Table 2: inference time ----------------------------------------------------------------------


def inference_times(deterministic: nn.Module, stochastic: nn.Module, x: torch.Tensor, sigma: float, n: int = 100,
                    alpha: float = 0.001, repeats: int = 3) -> dict[str, float]:
    """Seconds per image (the median over ``repeats`` passes over ``x``, one image at a time): one
    forward pass of the deterministic model, and Cohen's ``predict`` with ``n`` samples of the stochastic one."""
    smooth = Smooth(stochastic, 10, noise=("gaussian", sigma))
    gen = torch.Generator().manual_seed(0)

    def per_image(fn: Callable[[torch.Tensor], object]) -> float:
        fn(x[:1])  # warm-up
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(len(x)):
                fn(x[i:i + 1])
            runs.append((time.perf_counter() - t) / len(x))
        return float(np.median(runs))

    with torch.inference_mode():
        det = per_image(lambda xi: deterministic(xi).argmax(1))
    sto = per_image(lambda xi: smooth.predict(xi[0], n, alpha, n, gen))
    return {"deterministic": det, "stochastic": sto, "ratio": sto / det}


# -- the plan -------------------------------------------------------------------------------------


def planned_work(profile: str, seed: int = 0, s: Settings | None = None) -> Plan:
    """Every model, certification log and attack log (``other``: :class:`RobustnessConfig`) the chapter
    computes, in its order."""
    s = s or settings(profile)
    models = [model_config(m, profile, seed) for m in MODELS]
    images = -(-TEST_SIZES["cifar10"] // s.every)
    certs = [Planned(certify_config(m, profile, seed, s), s.arch, images,
                     samples=s.n + (0 if m in DETERMINISTIC else s.n0)) for m in MODELS]
    attacks = [robustness_config(m, profile, seed, s) for m in ATTACKED]
    return Plan(trainings=models, certifications=certs, other=attacks)


def _root(d: dict) -> dict:
    while "base" in d:
        d = d["base"]
    return d


def _finetune_kind(d: dict) -> str:
    """What a fine-tuning's cost per image depends on (besides the architecture), as a label."""
    if "timesteps" in d:
        return f"heat kappa={d['kappa']}"
    return f"{d['method']} steps={d['steps']} m={d.get('m', 1) if d['method'] == 'smoothadv' else 1}"


def _measured_seconds(st: ArtifactStore) -> tuple[dict[tuple, float], dict[tuple, float]]:
    """Seconds per training image of the stored fine-tunings, and per test image of the stored
    attack logs, keyed by what their cost depends on (averaged over artifacts)."""
    from ..book.eta import stored_metadata

    tune: dict[tuple, list[float]] = {}
    attack: dict[tuple, list[float]] = {}
    for meta in stored_metadata(st):
        cfg = meta.get("config", {})
        if cfg.get("type") in ("HeatConfig", "AdvConfig") and meta.get("history") and not cfg.get("max_batches"):
            images = (cfg.get("train_subset") or TRAIN_SIZES[_root(cfg)["dataset"]]) * len(meta["history"])
            key = (_root(cfg)["arch"], _finetune_kind(cfg))
            tune.setdefault(key, []).append(sum(h.get("seconds", 0.0) for h in meta["history"]) / images)
        elif cfg.get("type") == "RobustnessConfig" and meta.get("images"):
            key = (_root(cfg["model"])["arch"], cfg["stochastic"], cfg["attack_m"], cfg["steps"], cfg["audit_n"])
            attack.setdefault(key, []).append(meta["seconds"] / meta["images"])
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {k: mean(v) for k, v in tune.items()}, {k: mean(v) for k, v in attack.items()}


def announce_work(profile: str, seed: int = 0, s: Settings | None = None) -> float | None:
    """Print what this chapter run will compute and about how long it takes: the fine-tunings and
    attack logs at the rates measured for the stored ones (or that none was measured), then the
    trainings and certifications through :func:`rsbook.book.eta.announce`. Returns the latter's estimate."""
    from ..infra.timing import format_duration

    s = s or settings(profile)
    plan = planned_work(profile, seed, s)
    models, certs, attacks = plan.trainings, plan.certifications, plan.other
    todo = [m for m in models if not _store_of(m, profile).exists(m, "pt")]
    plain = [m for m in todo if isinstance(m, TrainConfig)]
    fine = [m for m in todo if not isinstance(m, TrainConfig)]
    left = [a for a in attacks if not store(profile).exists(a, "tsv")]
    tune_rate, attack_rate = _measured_seconds(store(profile))
    total, unknown = 0.0, []
    for m in fine:
        d = dataclasses.asdict(m)
        rate = tune_rate.get((_root(d)["arch"], _finetune_kind(d)))
        images = (m.train_subset or TRAIN_SIZES["cifar10"]) * m.fit_config.epochs
        total += rate * images if rate else 0.0
        unknown += [] if rate else [type(m).__name__]
    images = -(-TEST_SIZES["cifar10"] // s.every)
    for a in left:
        rate = attack_rate.get((_root(dataclasses.asdict(a.model))["arch"], a.stochastic, a.attack_m, a.steps, a.audit_n))
        total += rate * images if rate else 0.0
        unknown += [] if rate else ["attack log"]
    if fine or left:
        est = (f"about {format_duration(total)} at the rates measured for the stored ones" if not unknown else
               f"no rate was measured yet for: {', '.join(sorted(set(unknown)))}")
        print(f"Not stored yet: {len(fine)} fine-tunings and {len(left)} attack logs (PGD and DDN, {images} images each): "
              f"{est}.", flush=True)
    return announce(store(profile), plain, certs, full_train=TRAIN_SIZES)


# -- published numbers, shown beside ours, never used as ours --------------------------------------

PAPER_SOURCE = "Campbell, Finlay & Oberman, 'Adversarial Boot Camp': CIFAR-10, ResNet-34, sigma = 0.1"

#: The paper's Table 5 (CIFAR-10): L-bound, PGD and DDN adversarial distance, (median, mean).
TABLE5: dict[str, dict[str, tuple[float, float] | None]] = {
    "HeatSmoothing": {"l_bound": (0.094, 0.085), "pgd": (0.7736, 0.9023), "ddn": (0.5358, 0.6361)},
    "SmoothAdv": {"l_bound": (0.090, 0.078), "pgd": (0.7697, 1.3241), "ddn": (0.4812, 0.6208)},
    "RandomizedSmoothing": {"l_bound": (0.087, 0.081), "pgd": (0.7425, 1.2677), "ddn": (0.4546, 0.5558)},
    "Undefended baseline": {"l_bound": None, "pgd": (0.7088, 0.8390), "ddn": (0.4911, 0.5713)},
}

#: The paper's Figure 4 (its own 1-D toy): the outlier's adversarial distance before and after the updates.
FIGURE4: tuple[float, float] = (0.10, 0.35)

#: The paper's Table 2: inference seconds per image (CIFAR-10 and ImageNet, CPU and GPU).
TABLE2: dict[str, dict[str, float]] = {
    "Deterministic (ours)": {"CIFAR-10 CPU": 0.0049, "CIFAR-10 GPU": 0.0080, "ImageNet CPU": 0.0615, "ImageNet GPU": 0.0113},
    "Stochastic (Cohen et al., 2019)": {"CIFAR-10 CPU": 0.0480, "CIFAR-10 GPU": 0.0399, "ImageNet CPU": 0.1631,
                                        "ImageNet GPU": 0.0932},
}

#: The paper's Table 4 (ImageNet-1k, ResNet-50, sigma = 0.25, 1,000 images): l2 certified radius (median, mean, max).
TABLE4: dict[str, tuple[float, float, float]] = {
    "Certified adversarially trained": (0.4226, 0.4193, 0.6158),
    "Adversarially trained": (0.0790, 0.1126, 0.6158),
    "Undefended baseline": (0.0, 0.1446, 0.6158),
}


# -- ImageNet (Figure 1(b), Table 4 as the paper ran them): user-supplied data and weights ------


@dataclass(frozen=True)
class ImageNetHeatRun:
    """The paper's ImageNet procedure: the given ResNet-50 (an undefended model for Figure 1(b),
    Madry et al.'s adversarially trained one for Table 4) fine-tuned with eq. (10) for one epoch
    (SGD, fixed rate 0.01; momentum is not stated, 0.9 here), then certified deterministically
    with ``n`` samples, before and after, on every ``every``-th validation image (50: the
    paper's 1,000 images).

    The trainer holds its images in memory, so the epoch runs over every ``train_every``-th
    training image (50: 25,600 images, about 3.9 GB at 224 px), not the paper's full epoch.
    ``classifier_weights`` is a state dict of ``torchvision.models.resnet50``. Not run for the
    book (no ImageNet, no GPU); the ``dry_run`` runs it on a tiny synthetic folder.
    """

    root: str
    classifier_weights: str
    sigma: float = 0.25
    train_every: int = 50
    kappa: int = 10
    delta: float = 0.1
    lr: float = 0.01
    momentum: float = 0.9
    penalty_scale: float | str = "h/2"  # targets the average at sigma (eq. (10) as printed, c = 1, targets sigma sqrt 2)
    batch_size: int = 64
    n: int = 1000
    alpha: float = 0.001
    every: int = 50
    resolution: int = 224
    max_batches: int = 0
    seed: int = 0


def imagenet_heat(run: ImageNetHeatRun, out_dir: str, device: torch.device | str = "cpu", batch_size: int | None = None,
                  progress: bool = True) -> dict[str, pd.DataFrame]:
    """Fine-tune ``run``'s model (resumable; weights in ``out_dir/heat-resnet50.pth``) and certify it and
    the given model (resumable per image); returns ``{"given": log, "heat": log}``. ``out_dir/run.json``
    records the run: a folder holding another run's results is refused."""
    import json
    from pathlib import Path

    from ..infra.artifacts import atomic_write_text
    from ..runs.runner import certify_dataset, clean_classes
    from ..infra.data import imagenet_subset
    from ..infra.distributed import broadcast, on_rank_zero, world
    from ..methods.heat import HeatSmoothing
    from ..models.classifiers import build_model, load_weights
    from ..infra.provenance import provenance
    from ..training.fit import FitConfig, fit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "run.json"
    if record.is_file() and json.loads(record.read_text()).get("run") != json.loads(json.dumps(dataclasses.asdict(run))):
        raise ValueError(f"{out} holds results of a different ImageNet run ({record} records it); pass another folder, "
                         "or delete it to start over")
    w = world()
    on_rank_zero(lambda: atomic_write_text(record, json.dumps({"run": dataclasses.asdict(run), "provenance": provenance(device)},
                                                              indent=1) + "\n"), f"recording {record}", w)
    fix = "pass a state dict of torchvision.models.resnet50 (e.g. torchvision's IMAGENET1K_V1 file, or Madry et al.'s model)"
    given = build_model("resnet50", "imagenet", 1000)
    load_weights(given[1], run.classifier_weights, "ResNet-50", fix)
    weights = out / "heat-resnet50.pth"

    def finetune() -> None:  # under torchrun rank 0 fine-tunes while the other ranks wait for the weights
        tuned = build_model("resnet50", "imagenet", 1000)
        tuned.load_state_dict(given.state_dict())
        step = HeatSmoothing(run.sigma, 1, timesteps=1, kappa=run.kappa, delta=run.delta, penalty_scale=run.penalty_scale,
                             imagenet_variant=True)
        cfg = FitConfig(epochs=1, batch_size=run.batch_size, lr=run.lr, momentum=run.momentum, weight_decay=0.0,
                        schedule="constant", augment=False, seed=run.seed, max_batches=run.max_batches)
        train = imagenet_subset(run.root, "train", run.train_every, run.resolution)
        tuned, _ = fit(tuned, step, cfg, out / "work", data=train, device=device, progress=progress,
                       desc="resnet50 heat (eq. 10)")
        torch.save(tuned.state_dict(), str(weights) + ".partial")
        Path(str(weights) + ".partial").replace(weights)

    if not broadcast(weights.is_file(), w):
        on_rank_zero(finetune, f"fine-tuning {weights}", w)
    tuned = build_model("resnet50", "imagenet", 1000)
    load_weights(tuned, str(weights), "fine-tuned ResNet-50", f"delete {weights} to fine-tune again")
    val = imagenet_subset(run.root, "val", run.every, run.resolution)
    logs = {}
    for name, net in (("given", given), ("heat", tuned)):  # n0 is unused when the classes are given
        smooth = Smooth(for_inference(net.to(device).eval()), 1000)
        logs[name] = certify_dataset(smooth, val, 1, run.n, run.alpha, batch_size, out / f"{name}.tsv", seed=run.seed,
                                     progress=progress, noise=("gaussian", run.sigma), classes=clean_classes(smooth, val),
                                     run_config={"run": dataclasses.asdict(run), "model": name})
    return logs
