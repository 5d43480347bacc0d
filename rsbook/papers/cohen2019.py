"""Chapter 0, Cohen, Rosenfeld & Kolter (2019): settings per profile, configs, models, published numbers.

Other chapters ask for chapter 0's models here, e.g. ``cifar_model(0.25, profile)`` is "the
sigma = 0.25 CIFAR-10 classifier of chapter 0 at this profile" (loaded from the committed
artifacts at ``cpu``, trained at ``smoke``/``dry_run``).

Published numbers are labelled as such and never used as ours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..infra.artifacts import ArtifactStore, config_key
from ..book.claims import Check, Claims, Estimate, greater, proportion
from ..book.eta import Plan, Planned, announce
from ..book.profiles import chapter_store, check_profile
from ..infra.data import TEST_SIZES, TRAIN_SIZES, test_subset
from ..core.certify import Smooth, max_certified_radius
from ..core.metrics import certified_accuracy, certified_at, clean_accuracy, envelope
from ..core.noise import Gaussian
from ..runs.runner import CertifyConfig, certification_log
from ..core.sequential import Sequential
from ..models.classifiers import for_inference
from ..training.classifier import TrainConfig
from ..training.stored import trained
from .common import smooth_for

__all__ = [
    "CHAPTER",
    "DRY_RUN_BATCH",
    "Settings",
    "settings",
    "store",
    "cifar_config",
    "mnist_config",
    "certify_config",
    "load_model",
    "grid_every",
    "planned_work",
    "announce_work",
    "smooth",
    "certification",
    "cifar_model",
    "COHEN_CIFAR10",
    "COHEN_SOURCE",
    "COHEN_RADII",
    "COHEN_SECONDS_PER_IMAGE",
    "paper_best_sigma",
    "certified_estimate",
    "clean_ordering_checks",
    "crossover_radii",
    "crossover_checks",
    "matched_training_checks",
    "SEQUENTIAL_POINTS",
    "sequential_points",
    "claims",
    "setting_note",
]

CHAPTER = "00_randomized_smoothing"


@dataclass(frozen=True)
class Settings:
    """Chapter 0's settings at one profile.

    ``every`` and ``grid_every`` pick every k-th test image (from the shipped every-20th
    subset when k is a multiple of 20); ``certify_batch=None`` lets the engine choose.
    """

    arch: str
    epochs: int
    batch_size: int
    lr: float
    schedule: str
    train_subset: int  # 0: the whole training set
    every: int
    n0: int
    n: int
    grid_every: int
    mnist_epochs: int
    mnist_subset: int
    mnist_batch_size: int = 128
    mnist_lr: float = 0.01
    alpha: float = 0.001
    certify_batch: int | None = None
    sigmas: tuple[float, ...] = (0.12, 0.25, 0.50, 1.00)
    mnist_sigmas: tuple[float, ...] = (0.25, 0.50, 1.00)
    universal_sigma: float = 1.0  # universal model: sigma_i ~ U(0, universal_sigma)
    n_max: int = 100_000  # the sequential certifier's cap: the paper's N
    sequential_sigmas: tuple[float, ...] = (0.25, 0.50)


#: A dry run's training batch: the paper's networks and training loop on a few images (a batch
#: of the paper's 256 through ResNet-110 costs a CPU tens of seconds, and a dry run only checks wiring).
DRY_RUN_BATCH = 8

_SETTINGS = {
    # CI: one epoch on 1,000 shipped training images, 20 test images (the sigma grid: 5), N = 100
    # (chapters 4 and A2 read chapter 0's smoke logs on their own images: every 2,500th, every 500th)
    "smoke": Settings(arch="cnn4", epochs=1, batch_size=128, lr=0.05, schedule="cosine", train_subset=1000,
                      every=500, n0=10, n=100, grid_every=2000, mnist_epochs=1, mnist_subset=1000, certify_batch=128,
                      n_max=1000),
    # the published book: the 4-conv CNN for 20 epochs, N = 1,000 (MNIST LeNet at lr 0.01 for 5 epochs)
    "cpu": Settings(arch="cnn4", epochs=20, batch_size=256, lr=0.05, schedule="cosine", train_subset=0,
                    every=20, n0=100, n=1000, grid_every=100, mnist_epochs=5, mnist_subset=0),
    # Cohen et al.: ResNet-110, 90 epochs, lr 0.1 x0.1 every 30, N = 100,000
    "paper": Settings(arch="cifar_resnet110", epochs=90, batch_size=256, lr=0.1, schedule="step", train_subset=0,
                      every=20, n0=100, n=100_000, grid_every=20, mnist_epochs=90, mnist_subset=0,
                      sequential_sigmas=(0.12, 0.25, 0.50, 1.00)),
}


def settings(profile: str) -> Settings:
    """The settings at ``profile``; ``dry_run`` is ``paper`` shrunk to one batch of
    :data:`DRY_RUN_BATCH` images per training, two test images and N = 50 (derived here, so it
    cannot drift from ``paper``)."""
    check_profile(profile)
    if profile == "dry_run":
        p = _SETTINGS["paper"]
        return dataclasses.replace(p, epochs=1, batch_size=DRY_RUN_BATCH, train_subset=DRY_RUN_BATCH, every=5000, grid_every=5000,
                                   n0=10, n=50, mnist_epochs=1, mnist_batch_size=DRY_RUN_BATCH, mnist_subset=DRY_RUN_BATCH, n_max=100)
    return _SETTINGS[profile]


def store(profile: str, recompute: bool = False) -> ArtifactStore:
    """Chapter 0's artifact store at ``profile`` (one temporary folder per process for
    ``smoke``/``dry_run``, so other chapters reuse the models trained there)."""
    return chapter_store(CHAPTER, profile, recompute)


def cifar_config(sigma: float, profile: str, mode: str = "fixed", seed: int = 0) -> TrainConfig:
    """The CIFAR-10 classifier trained with Gaussian noise ``sigma`` (``mode="universal"``:
    ``sigma_i ~ U(0, sigma)`` per image) at ``profile``."""
    s = settings(profile)
    return TrainConfig(dataset="cifar10", arch=s.arch, sigma=sigma, sigma_mode=mode, epochs=s.epochs, batch_size=s.batch_size,
                       lr=s.lr, schedule=s.schedule, train_subset=s.train_subset, seed=seed)


def mnist_config(sigma: float, profile: str, seed: int = 0) -> TrainConfig:
    """The MNIST LeNet trained with Gaussian noise ``sigma`` at ``profile`` (lr 0.01, cosine,
    no augmentation: one setting for every sigma, not tuned per sigma)."""
    s = settings(profile)
    return TrainConfig(dataset="mnist", arch="lenet", sigma=sigma, epochs=s.mnist_epochs, batch_size=s.mnist_batch_size,
                       lr=s.mnist_lr, schedule="cosine", augment=False, train_subset=s.mnist_subset, seed=seed)


def certify_config(model: TrainConfig, sigma: float, profile: str, n: int = 0, every: int = 0, seed: int = 0) -> CertifyConfig:
    """The certification of ``model`` smoothed with Gaussian ``sigma`` at ``profile`` (``n`` and
    ``every`` override the profile's when non-zero)."""
    s = settings(profile)
    return CertifyConfig(model=model, noise=Gaussian(sigma), n0=s.n0, n=n or s.n, alpha=s.alpha, dataset=model.dataset,
                         every=every or s.every, seed=seed)


def sequential_config(model: TrainConfig, sigma: float, profile: str, n_max: int = 0, every: int = 0,
                      seed: int = 0) -> CertifyConfig:
    """The anytime-valid sequential certification of ``model`` at ``sigma``: decide at the
    paper's table radii (:data:`COHEN_RADII`) with at most ``n_max`` (default: the profile's,
    the paper's N) estimation samples per image."""
    s = settings(profile)
    return CertifyConfig(model=model, noise=Gaussian(sigma), n0=s.n0, n=n_max or s.n_max, alpha=s.alpha, dataset=model.dataset,
                         every=every or s.every, seed=seed, sequential=SEQUENTIAL)


def grid_every(profile: str, every: int = 0) -> int:
    """The test subset of the training-sigma vs smoothing-sigma grid: every ``max(grid_every, every)``-th image."""
    s = settings(profile)
    return max(s.grid_every, every or s.every)


def planned_work(profile: str, n: int = 0, every: int = 0, seed: int = 0) -> Plan:
    """Every model and certification log the chapter computes at these settings, in its order."""
    s = settings(profile)
    every, grid = every or s.every, grid_every(profile, every)
    images = lambda dataset, k: -(-TEST_SIZES[dataset] // k)  # noqa: E731 -- ceil: indices 0, k, 2k, ...
    fixed = {sg: cifar_config(sg, profile, seed=seed) for sg in s.sigmas}
    uni = cifar_config(s.universal_sigma, profile, "universal", seed=seed)
    mnist = {sg: mnist_config(sg, profile, seed=seed) for sg in s.mnist_sigmas}
    logs = [(fixed[sg], sg, every) for sg in s.sigmas] + [(uni, sg, every) for sg in s.sigmas]
    logs += [(fixed[a], b, grid) for a in s.sigmas for b in s.sigmas] + [(mnist[sg], sg, every) for sg in s.mnist_sigmas]
    certs = [Planned(certify_config(m, sg, profile, n, k, seed), m.arch, images(m.dataset, k)) for m, sg, k in logs]
    # sequential runs stop early: plan them at a tenth of n_max per image (A2 measures 1/20 to 1/30)
    certs += [Planned(sequential_config(fixed[sg], sg, profile, every=every, seed=seed), fixed[sg].arch,
                      images("cifar10", every), samples=s.n0 + s.n_max // 10) for sg in s.sequential_sigmas]
    return Plan(trainings=[*fixed.values(), uni, *mnist.values()], certifications=certs)


def announce_work(profile: str, store: ArtifactStore, n: int = 0, every: int = 0, seed: int = 0) -> float | None:
    """Print what this chapter run will compute and about how long it takes (see :mod:`rsbook.book.eta`)."""
    plan = planned_work(profile, n, every, seed)
    return announce(store, plan.trainings, plan.certifications, full_train=TRAIN_SIZES)


def load_model(cfg: TrainConfig, store: ArtifactStore, device: torch.device | str = "cpu", progress: bool = True) -> torch.nn.Module:
    """The model for ``cfg`` from ``store`` (trained first if absent), ready for inference."""
    return for_inference(trained(cfg, store, device, progress))


def cifar_model(sigma: float, profile: str, device: torch.device | str = "cpu", mode: str = "fixed", seed: int = 0,
                progress: bool = True) -> torch.nn.Module:
    """Chapter 0's CIFAR-10 classifier for ``sigma`` at ``profile``, in one call."""
    return load_model(cifar_config(sigma, profile, mode, seed), store(profile), device, progress)


def smooth(model: TrainConfig, store: ArtifactStore, device: torch.device | str = "cpu", progress: bool = True,
           net: torch.nn.Module | None = None) -> Smooth:
    """The one :class:`Smooth` of chapter 0's model ``model`` (from ``store``) on ``device``, for every
    certification of it (any sigma, subset, fixed or sequential): :func:`rsbook.papers.common.smooth_for`.
    ``net`` is the model already loaded (by :func:`load_model`), if it is; else it is loaded on first use."""
    return smooth_for((CHAPTER, config_key(model), str(store.root), str(device)),
                      lambda: Smooth(net if net is not None else load_model(model, store, device, progress), 10))


def certification(model: TrainConfig, sigma: float, profile: str, store: ArtifactStore, device: torch.device | str = "cpu",
                  progress: bool = True, n: int = 0, every: int = 0, seed: int = 0, sequential: bool = False,
                  net: torch.nn.Module | None = None) -> pd.DataFrame:
    """The certification log of chapter 0's model ``model`` smoothed with Gaussian ``sigma`` (loaded from
    ``store``, or computed resumably through the engine and stored first), on every ``every``-th test
    image of the model's data set: :func:`certify_config` at ``n`` samples, or with ``sequential``,
    :func:`sequential_config` with ``n`` the cap ``n_max`` (``n`` and ``every``: the profile's when 0).
    One :class:`Smooth` per model (:func:`smooth`; ``net``: the model already loaded, if it is)."""
    s = settings(profile)
    cfg = (sequential_config(model, sigma, profile, n, every, seed) if sequential
           else certify_config(model, sigma, profile, n, every, seed))
    return certification_log(cfg, smooth(model, store, device, progress, net), test_subset(model.dataset, cfg.every), store,
                             batch_size=s.certify_batch, progress=progress)


# -- published numbers (Cohen et al. 2019), shown beside ours, never used as ours -------------------

COHEN_SOURCE = "Cohen, Rosenfeld & Kolter (2019), CIFAR-10, ResNet-110, N=100,000, alpha=0.001, 500 test images"
COHEN_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)

#: The chapter's sequential certifier: decide at the paper's table radii (see :mod:`rsbook.core.sequential`).
SEQUENTIAL = Sequential(radii=COHEN_RADII)

#: Cohen et al. (2019) CIFAR-10 certified accuracy at r = 0, .25, .5, .75, 1.0, 1.5 per sigma.
COHEN_CIFAR10: dict[float, dict[float, float]] = {
    0.12: {0.0: 0.81, 0.25: 0.59, 0.5: 0.0, 0.75: 0.0, 1.0: 0.0, 1.5: 0.0},
    0.25: {0.0: 0.75, 0.25: 0.60, 0.5: 0.43, 0.75: 0.27, 1.0: 0.0, 1.5: 0.0},
    0.50: {0.0: 0.65, 0.25: 0.55, 0.5: 0.41, 0.75: 0.32, 1.0: 0.23, 1.5: 0.09},
    1.00: {0.0: 0.47, 0.25: 0.39, 0.5: 0.34, 0.75: 0.28, 1.0: 0.22, 1.5: 0.14},
}

#: Cohen et al.'s certification time on CIFAR-10 at N = 100,000: about 15 s per image on one GPU.
COHEN_SECONDS_PER_IMAGE = 15.0


def paper_best_sigma(radius: float) -> float:
    """The sigma with the highest published certified accuracy at ``radius`` (the paper's envelope)."""
    return max(COHEN_CIFAR10, key=lambda s: COHEN_CIFAR10[s][radius])


# -- the claims' checks: per-image quantities of our logs, paired by test image -------------------


def _by_image(log: pd.DataFrame) -> pd.DataFrame:
    return log.sort_values("idx").reset_index(drop=True)


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    a, b = _by_image(a), _by_image(b)
    if not np.array_equal(a["idx"].to_numpy(), b["idx"].to_numpy()):
        raise ValueError("a paired comparison needs two logs of the same test images")
    return a, b


def certified_estimate(log: pd.DataFrame, radius: float) -> Estimate:
    """Certified accuracy at ``radius`` as a proportion ``k / n`` over the log's test images, with its
    Clopper-Pearson interval (:func:`rsbook.book.claims.proportion`)."""
    hits = certified_at(log, radius)
    return proportion(int(hits.sum()), len(hits))


def clean_ordering_checks(logs: Mapping[float, pd.DataFrame]) -> list[Check]:
    """"Clean accuracy falls as sigma grows": for each pair of adjacent sigmas ``a < b``, the sign
    test that images certified correct at radius 0 under ``a`` outnumber those under ``b``
    (:func:`rsbook.book.claims.greater` on the 0/1 indicators, paired by image)."""
    sig = sorted(logs)
    out = []
    for a, b in zip(sig, sig[1:]):
        la, lb = _paired(logs[a], logs[b])
        out.append(greater(certified_at(la, 0.0), certified_at(lb, 0.0), f"r = 0: sigma {a:g} > {b:g}"))
    return out


def crossover_radii(sigmas: Sequence[float], paper: Mapping[float, Mapping[float, float]] | None = None,
                    radii: tuple[float, ...] = COHEN_RADII) -> list[tuple[float, float, float]]:
    """``(a, b, r)`` for each pair of adjacent sigmas ``a < b``: the radius ``r`` at which the paper's
    certified accuracy of ``b`` exceeds that of ``a`` by the most (``paper``: :data:`COHEN_CIFAR10`).

    >>> crossover_radii((0.12, 0.25, 0.50, 1.00))
    [(0.12, 0.25, 0.5), (0.25, 0.5, 1.0), (0.5, 1.0, 1.5)]
    """
    paper = COHEN_CIFAR10 if paper is None else paper
    sig = sorted(sigmas)
    return [(a, b, max(radii, key=lambda rad: paper[b][rad] - paper[a][rad])) for a, b in zip(sig, sig[1:])]


def crossover_checks(logs: Mapping[float, pd.DataFrame], paper: Mapping[float, Mapping[float, float]] | None = None,
                     radii: tuple[float, ...] = COHEN_RADII) -> list[Check]:
    """"The best sigma grows with the radius", as paired sign tests on certified-correct indicators:

    * at the smallest radius, the smallest sigma beats the next one;
    * for each pair of adjacent sigmas ``a < b``, ``b`` beats ``a`` at the radius where the paper's
      advantage of ``b`` over ``a`` is largest (:func:`crossover_radii`).

    A wrong ordering fails (or leaves undecided) the corresponding test.
    """
    sig = sorted(logs)
    r0 = min(radii)
    first, second = _paired(logs[sig[0]], logs[sig[1]])
    out = [greater(certified_at(first, r0), certified_at(second, r0), f"r = {r0:g}: sigma {sig[0]:g} > {sig[1]:g}")]
    for a, b, r in crossover_radii(sig, paper, radii):
        la, lb = _paired(logs[a], logs[b])
        out.append(greater(certified_at(lb, r), certified_at(la, r), f"r = {r:g}: sigma {b:g} > {a:g}"))
    return out


def matched_training_checks(grid: Mapping[tuple[float, float], pd.DataFrame]) -> list[Check]:
    """"For each smoothing sigma, the model trained at that sigma has the best ACR": ``grid`` maps
    ``(training sigma, smoothing sigma)`` to a certification log on the same images. For each
    smoothing sigma ``s``, the model trained at ``s`` against the strongest other model (the highest
    ACR among the other training sigmas at ``s``): the Wilcoxon signed-rank test on the per-image
    certified radius (0 when wrong or abstained), whose mean is the ACR."""
    out = []
    for s in sorted({smooth for _, smooth in grid}):
        others = [t for t, sm in grid if sm == s and t != s]
        if (s, s) not in grid or not others:
            continue

        def radius(t: float) -> np.ndarray:
            log = _by_image(grid[(t, s)])
            return log["radius"].to_numpy() * log["correct"].to_numpy()

        rival = max(others, key=lambda t: radius(t).mean())
        _paired(grid[(s, s)], grid[(rival, s)])
        out.append(greater(radius(s), radius(rival), f"smoothing {s:g}: trained at {s:g} > trained at {rival:g}"))
    return out


# -- the claims table -----------------------------------------------------------------------------

#: The sequential rows of the claims table: ``(log name, radius)``, one radius per sigma beyond the
#: ``cpu`` profile's fixed-n cap, where the paper certifies a share of its images.
SEQUENTIAL_POINTS: tuple[tuple[str, float], ...] = (("sigma=0.25", 0.75), ("sigma=0.50", 1.5))


def _sigma_of(name: str) -> float:
    """The sigma of a log named ``"sigma=0.25"``."""
    return float(name.split("=")[1])


def sequential_points(seq_logs: Mapping[str, pd.DataFrame], n: int,
                      alpha: float) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """``(points, above)`` for the sequential logs (named ``"sigma=0.25"``, ...): ``points`` maps each log
    of :data:`SEQUENTIAL_POINTS` to ``(radius, certified accuracy at it)``; ``above`` keeps the points at
    or above the cap ``sigma Phi^-1(alpha^(1/n))`` of fixed ``n`` (:func:`max_certified_radius`), where
    fixed n certifies nothing by construction."""
    ours = {name: dict(zip(COHEN_RADII, certified_accuracy(log, COHEN_RADII))) for name, log in seq_logs.items()}
    points = {name: (r, ours[name][r]) for name, r in SEQUENTIAL_POINTS if name in ours}
    above = {name: (r, a) for name, (r, a) in points.items() if r >= max_certified_radius(Gaussian(_sigma_of(name)), n, alpha)}
    return points, above


def setting_note(s: Settings, n: int, images: int, every: int) -> str:
    """The claims table's note: our setting (``n`` samples, ``images`` test images, every ``every``-th)
    against the paper's, and what the margins allow for."""
    paper_s = settings("paper")
    return (f"**Setting.** Ours: {s.arch}, {s.epochs} epochs, n = {n:,}, {images} test images (every {every}th). "
            f"Paper: {paper_s.arch}, {paper_s.epochs} epochs, n = {paper_s.n:,}, 500 test images. Our intervals cover our "
            "sampling error over the test images only; the margin added to each side (shown in each row) is the allowance for "
            f"our smaller network and shorter training ({s.arch} for {s.epochs} epochs instead of {paper_s.arch} for "
            f"{paper_s.epochs}), which a reproduction at the paper's setting would not need. Certified accuracies are "
            "proportions of test images certified correct at the radius.")


def claims(profile: str, s: Settings, n: int, logs: Mapping[str, pd.DataFrame],
           grid_logs: Mapping[tuple[float, float], pd.DataFrame], best_train_for: Mapping[float, float], grid_images: int,
           seq_logs: Mapping[str, pd.DataFrame]) -> Claims:
    """The chapter's claims table (:mod:`rsbook.book.claims`) from its certification logs.

    ``logs``: the fixed-sigma CIFAR-10 logs at ``n`` samples, named ``"sigma=0.12"``, ... in the order
    of ``s.sigmas``; ``grid_logs``: ``{(training sigma, smoothing sigma): log}`` on ``grid_images`` test
    images, and ``best_train_for``: the training sigma with the best ACR per smoothing sigma;
    ``seq_logs``: the sequential logs by name (:func:`sequential_points`). Every comparison is paired
    by test image.
    """
    c = Claims(CHAPTER, profile)
    sigmas, radii, alpha, paper_s = list(s.sigmas), list(COHEN_RADII), s.alpha, settings("paper")
    by_sigma = {sg: logs[f"sigma={sg:.2f}"] for sg in sigmas}
    published = {name: COHEN_CIFAR10[sg] for name, sg in zip(logs, sigmas)}
    hi, above = sequential_points(seq_logs, n, alpha)
    clean = [clean_accuracy(by_sigma[sg]) for sg in sigmas]
    c.qualitative("clean accuracy of g falls as sigma grows (0.12 > 0.25 > 0.50 > 1.00)",
                  " > ".join(f"{COHEN_CIFAR10[sg][0.0]:.2f}" for sg in sigmas), " > ".join(f"{a:.2f}" for a in clean),
                  clean_ordering_checks(by_sigma),
                  test="each adjacent pair of sigmas, paired by test image (certified correct at r = 0 or not)")
    fixed_rows = [(0.25, 0.5), (0.25, 0.75), (0.50, 1.0), (1.00, 1.5)]
    for sg, r in fixed_rows:
        cap = max_certified_radius(Gaussian(sg), n, alpha)
        c.numeric(f"certified accuracy at r = {r}, sigma = {sg} (fixed n = {n:,})", COHEN_CIFAR10[sg][r],
                  certified_estimate(by_sigma[sg], r), comparable=r < cap, fmt="{:.3f}",
                  why="" if r < cap else (f"r = {r} is above our cap {cap:.2f} = σ Φ⁻¹(α^(1/n)) at n = {n:,}: no "
                                          "image can be certified there by construction (the sequential row below lifts it)"))
    best = dict(zip(radii, envelope(logs, radii)["best"]))
    capped = [(a, r) for a, b, r in crossover_radii(sigmas) if r >= max_certified_radius(Gaussian(a), n, alpha)]
    crossover_why = ("a proxy for the envelope: the smallest sigma wins at r = 0, and each larger sigma beats the next smaller one "
                     "at the radius of the paper's largest gap between them"
                     + (("; at " + ", ".join(f"r = {r:g} (sigma {a:g})" for a, r in capped) + f" the smaller sigma is above its "
                         f"cap σ Φ⁻¹(α^(1/n)) at n = {n:,} and certifies nothing, so those tests show that a larger sigma reaches "
                         "further, not where the curves cross") if capped else ""))
    paper_best = {r: f"sigma={paper_best_sigma(r):.2f}" for r in radii}
    c.qualitative("the best sigma grows with the radius (envelope)",
                  ", ".join(f"r={r:g}: {paper_best[r]}" for r in radii), ", ".join(f"r={r:g}: {best[r]}" for r in radii),
                  crossover_checks(by_sigma), why=crossover_why,
                  test="paired sign tests on certified correct at the radius, same test images")
    c.qualitative("for each smoothing sigma, the model trained at that sigma has the best ACR", "(Cohen et al., qualitative)",
                  "best training sigma per smoothing sigma: " + ", ".join(f"{sg:g} → {best_train_for[sg]:g}" for sg in sigmas),
                  matched_training_checks(grid_logs),
                  why=(f"grid on {grid_images} test images; each check compares the matched model with the strongest other "
                       "training sigma at that smoothing sigma (the highest ACR among the others)"),
                  test="Wilcoxon signed-rank on the per-image certified radius (0 if wrong), whose mean is the ACR")
    for name, (r, _) in hi.items():
        seq_cap = max_certified_radius(Gaussian(_sigma_of(name)), s.n_max, alpha)  # Clopper-Pearson's; the sequence's is lower
        c.numeric(f"certified accuracy at r = {r}, {name.replace('=', ' = ')} (sequential, n_max = {s.n_max:,})", published[name][r],
                  certified_estimate(seq_logs[name], r), fmt="{:.3f}", comparable=r < seq_cap,
                  why=(f"above the cap of fixed n = {n:,}; " if name in above else "") + "sequential certifier, appendix A2"
                      + ("" if r < seq_cap else f"; r = {r} is above the cap {seq_cap:.2f} of n_max = {s.n_max:,} too"))
    c.not_reproduced_here("Cohen et al.'s ImageNet results (certified accuracy of a smoothed ResNet-50 per sigma)",
                          "needs the ImageNet data set and GPU hours; this chapter certifies CIFAR-10 (and MNIST, which the paper "
                          "does not report) on CPU")
    return c
