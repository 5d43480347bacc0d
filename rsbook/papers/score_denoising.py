"""Chapter 1, denoised smoothing with a learned score function: settings, configs, models, published numbers.

The certified model is always an off-the-shelf classifier trained *without* noise, behind a
denoiser (:class:`Method`):

* ``none``: the classifier alone (no denoiser);
* ``one_step``: Tweedie's denoiser from the score network (Gaussian noise only);
* ``multi_step``: the annealing denoiser (Algorithm 1) from the same score network;
* ``dncnn``: Salman et al.'s query-free DnCNN, trained with MSE at the smoothing noise.

White-box smoothing (a classifier trained with the noise) is the reference: chapter 0's
Gaussian models and logs for Gaussian noise, and Laplace- and uniform-augmented models
trained here with chapter 0's recipe.

Published numbers are labelled as such and never used as ours.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..infra.artifacts import ArtifactStore, config_key
from ..book.claims import MARGIN, Check, Claim, Claims, exact, greater, mean, proportion
from ..book.eta import Plan, Planned, announce
from ..book.profiles import chapter_store, check_profile
from ..core.certify import Smooth, max_certified_radius
from ..core.metrics import certified_accuracy, clean_accuracy
from ..core.noise import Gaussian, make_noise
from ..runs.runner import CertifyConfig, certification_log
from ..infra.data import TEST_SIZES, TRAIN_SIZES, test_subset
from ..methods import mixture
from ..methods.denoise import (Anneal, AnnealingDenoiser, Denoised, TweedieDenoiser, anneal, data_gradient, denoising_psnr,
                               tweedie)
from ..models.classifiers import for_inference, load_weights
from ..infra.timing import format_duration
from ..training.classifier import TrainConfig
from ..training.stored import trained
from ..training.denoiser import DenoiserConfig
from . import cohen2019
from .common import smooth_for

__all__ = [
    "CHAPTER",
    "METHODS",
    "Settings",
    "settings",
    "store",
    "Method",
    "classifier_config",
    "score_config",
    "dncnn_config",
    "white_box_config",
    "method",
    "certify_config",
    "certified_model",
    "certification",
    "white_box_gaussian_log",
    "planned_work",
    "announce_work",
    "TABLE1",
    "TABLE1_SOURCE",
    "TABLE1_RADII",
    "TABLE2",
    "ImageNetRun",
    "imagenet_model",
    "imagenet_certification",
    "synthetic_imagenet",
    "LABELS",
    "common_images",
    "describe_images",
    "images_plan",
    "certified",
    "best_sigma",
    "table1",
    "duration",
    "toy_mixture",
    "tweedie_table",
    "printed_sign_score",
    "MAP_COLUMNS",
    "map_error_table",
    "map_deviation",
    "UnseenLevel",
    "unseen_level_psnr",
    "psnr_table",
    "schedule_table",
    "score_evaluations",
    "cost_table",
    "parameters",
    "not_worse_by",
    "Networks",
    "claims",
    "setting_note",
    "speed_table",
]

CHAPTER = "01_denoised_smoothing"
METHODS = ("none", "one_step", "multi_step", "dncnn")


@dataclass(frozen=True)
class Settings:
    """Chapter 1's settings at one profile (``every``: certify every k-th test image)."""

    score_width: int
    score_epochs: int
    score_batch: int
    score_lr: float
    dncnn_depth: int
    dncnn_width: int
    dncnn_epochs: int
    train_subset: int  # 0: the whole training set
    max_batches: int  # > 0: a dry run's batches per epoch
    every: int
    multi_every: int  # the (costlier) multi-step certifications: every k-th test image
    n0: int
    n: int
    anneal: Anneal
    alpha: float = 0.001
    certify_batch: int | None = None
    sigmas: tuple[float, ...] = (0.25, 0.50)  # Gaussian smoothing levels of Table 1
    other_sigma: float = 0.5  # the std of the Laplace and uniform noise of Figure 2 (b, c)
    unseen_sigma: float = 0.45  # a level between two training levels (0.359 and 0.599)
    white_box_epochs: int = 0  # Laplace / uniform white-box models; 0: chapter 0's epochs


#: A dry run's multi-step schedule: Algorithm 1's two loops (levels, steps per level) each taken
#: more than once, with fewer evaluations of the paper's width-128 U-Net (L x T = 4, not 10).
DRY_RUN_ANNEAL = Anneal(levels=2, steps=2)

_SETTINGS = {
    # CI: tiny networks, one epoch on the shipped 1,000 training images, 5 test images, N = 100
    "smoke": Settings(score_width=8, score_epochs=1, score_batch=64, score_lr=2e-3, dncnn_depth=4, dncnn_width=8,
                      dncnn_epochs=1, train_subset=1000, max_batches=0, every=2000, multi_every=2000, n0=10, n=100,
                      anneal=Anneal(levels=2, steps=1), certify_batch=128),
    # the published book on 2 CPU cores (see the chapter for the budget)
    "cpu": Settings(score_width=24, score_epochs=5, score_batch=128, score_lr=2e-3, dncnn_depth=8, dncnn_width=32,
                    dncnn_epochs=1, train_subset=0, max_batches=0, every=100, multi_every=100, n0=100, n=1000,
                    anneal=Anneal(levels=3, steps=1), white_box_epochs=5),
    # the paper's certification (N = 10,000, alpha = 0.001, 500 images, ResNet-110); the score
    # network's size and training and the schedule (L, T) are this book's choices (not given)
    "paper": Settings(score_width=128, score_epochs=200, score_batch=128, score_lr=2e-4, dncnn_depth=17, dncnn_width=64,
                      dncnn_epochs=90, train_subset=0, max_batches=0, every=20, multi_every=20, n0=100, n=10_000,
                      anneal=Anneal(levels=5, steps=2), sigmas=(0.25, 0.50, 1.00)),
}


def settings(profile: str, n: int = 0, every: int = 0, multi_every: int = 0,
             sigmas: tuple[float, ...] | str = ()) -> Settings:
    """The settings at ``profile``; ``dry_run`` is ``paper`` with one batch (of chapter 0's ``DRY_RUN_BATCH`` images) per epoch and one
    epoch, two test images, n0 = 2, N = 8, its first sigma only and the multi-step schedule
    :data:`DRY_RUN_ANNEAL` (derived, so it cannot drift from ``paper``; the networks are the paper
    profile's).

    A reader's rerun overrides the certification: ``n`` samples, every ``every``-th test image
    (``multi_every`` for the multi-step denoiser), the Gaussian levels ``sigmas`` (a tuple or a
    comma-separated string, as papermill passes it); 0 or empty keeps the profile's. The
    networks are unchanged, so the stored ones are reused.
    """
    check_profile(profile)
    s = _SETTINGS["paper" if profile == "dry_run" else profile]
    if profile == "dry_run":
        s = dataclasses.replace(s, score_epochs=1, dncnn_epochs=1, max_batches=1, score_batch=cohen2019.DRY_RUN_BATCH,
                                train_subset=cohen2019.DRY_RUN_BATCH, every=5000,
                                multi_every=5000, n0=2, n=8, sigmas=s.sigmas[:1], anneal=DRY_RUN_ANNEAL)
    if isinstance(sigmas, str):
        try:
            sigmas = tuple(float(v) for v in sigmas.replace(" ", "").split(",") if v)
        except ValueError:
            raise ValueError(f"sigmas must be comma-separated numbers such as '0.25,0.5', got {sigmas!r}") from None
    for name, v in (("n", n), ("every", every), ("multi_every", multi_every)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer (0 keeps the profile's), got {v!r}")
    if any(not (0 < float(v) < float("inf")) for v in sigmas):
        raise ValueError(f"every sigma must be a positive finite number, got {sigmas}")
    return dataclasses.replace(s, n=n or s.n, every=every or s.every, multi_every=multi_every or s.multi_every,
                               sigmas=tuple(float(v) for v in sigmas) or s.sigmas)


def store(profile: str, recompute: bool = False) -> ArtifactStore:
    """Chapter 1's artifact store at ``profile`` (one temporary folder per process for ``smoke``/``dry_run``)."""
    return chapter_store(CHAPTER, profile, recompute)


def classifier_config(profile: str, seed: int = 0) -> TrainConfig:
    """The off-the-shelf classifier: chapter 0's recipe at ``profile`` trained without noise."""
    return cohen2019.cifar_config(0.0, profile, seed=seed)


def white_box_config(noise: str, sigma: float, profile: str, seed: int = 0) -> TrainConfig:
    """The white-box baseline: chapter 0's recipe trained with ``noise`` at ``sigma`` (for
    ``white_box_epochs`` epochs where the profile sets them)."""
    cfg = dataclasses.replace(cohen2019.cifar_config(sigma, profile, seed=seed), noise=noise)
    epochs = settings(profile).white_box_epochs
    return dataclasses.replace(cfg, epochs=epochs) if epochs else cfg


def score_config(profile: str, seed: int = 0) -> DenoiserConfig:
    """The score network: multi-scale DSM over 10 geometric levels from 1.0 to 0.01."""
    s = settings(profile)
    return DenoiserConfig(objective="dsm", arch="score_unet", width=s.score_width, epochs=s.score_epochs,
                          batch_size=s.score_batch, lr=s.score_lr, train_subset=s.train_subset, max_batches=s.max_batches,
                          seed=seed)


def dncnn_config(sigma: float, profile: str, noise: str = "gaussian", seed: int = 0) -> DenoiserConfig:
    """Salman et al.'s query-free baseline: a DnCNN trained with MSE at ``(noise, sigma)``."""
    s = settings(profile)
    return DenoiserConfig(objective="mse", arch="dncnn", width=s.dncnn_width, depth=s.dncnn_depth, noise=noise, sigma=sigma,
                          epochs=s.dncnn_epochs, batch_size=128, lr=1e-3, train_subset=s.train_subset,
                          max_batches=s.max_batches, seed=seed)


@dataclass(frozen=True)
class Method:
    """A certified model: ``classifier`` behind the ``kind`` of denoiser (see the module doc)."""

    kind: str
    classifier: TrainConfig
    denoiser: DenoiserConfig | None = None
    anneal: Anneal | None = None  # multi_step only

    def __post_init__(self) -> None:
        if self.kind not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.kind!r}")
        if (self.kind == "none") != (self.denoiser is None):
            raise ValueError(f"method {self.kind!r}: a denoiser is needed exactly when the kind is not 'none'")
        if (self.kind == "multi_step") != (self.anneal is not None):
            raise ValueError("the multi_step method needs its schedule (anneal=...), and only it")

    @property
    def noise_conditioned(self) -> bool:
        return self.kind != "none"


def method(kind: str, profile: str, sigma: float = 0.25, noise: str = "gaussian", seed: int = 0) -> Method:
    """The chapter's ``kind`` of method at ``profile`` (``sigma``, ``noise``: the DnCNN's training noise)."""
    clf = classifier_config(profile, seed)
    if kind == "none":
        return Method("none", clf)
    if kind == "dncnn":
        return Method("dncnn", clf, dncnn_config(sigma, profile, noise, seed))
    if kind == "one_step":
        return Method("one_step", clf, score_config(profile, seed))
    return Method(kind, clf, score_config(profile, seed), settings(profile).anneal)


def certify_config(model: Method | TrainConfig, noise: str, sigma: float, profile: str, every: int = 0, n: int = 0,
                   seed: int = 0, s: Settings | None = None) -> CertifyConfig:
    """The certification of ``model`` smoothed with ``noise`` at std ``sigma`` at ``profile``
    (``s``: the profile's settings with a reader's overrides, :func:`settings`)."""
    s = s or settings(profile)
    if not every:
        every = s.multi_every if isinstance(model, Method) and model.kind == "multi_step" else s.every
    return CertifyConfig(model=model, noise=make_noise(noise, sigma), n0=s.n0, n=n or s.n, alpha=s.alpha, dataset="cifar10",
                         every=every, seed=seed)


def certified_model(m: Method | TrainConfig, noise: str, store: ArtifactStore, device: torch.device | str = "cpu",
                    progress: bool = True) -> nn.Module:
    """The network the engine certifies for ``m``: ``f`` (``none``, white-box) or ``f(D(y, sigma))``.

    Every piece is loaded from ``store`` (trained first if absent); ``noise`` picks the
    annealing denoiser's data term.
    """
    if isinstance(m, TrainConfig):
        return for_inference(trained(m, store, device, progress))
    if m.kind == "one_step" and noise != "gaussian":
        raise ValueError(f"the one-step (Tweedie) denoiser is valid for Gaussian noise only, not {noise!r}")
    clf = for_inference(trained(m.classifier, store, device, progress))
    if m.kind == "none":
        return clf
    net = trained(m.denoiser, store, device, progress).eval().requires_grad_(False)
    denoiser = {"one_step": lambda: TweedieDenoiser(net), "dncnn": lambda: net,
                "multi_step": lambda: AnnealingDenoiser(net, noise, m.anneal)}[m.kind]()
    return for_inference(Denoised(denoiser, clf))


def certification(m: Method | TrainConfig, noise: str, sigma: float, profile: str, store: ArtifactStore,
                  device: torch.device | str = "cpu", progress: bool = True, every: int = 0, n: int = 0,
                  seed: int = 0, s: Settings | None = None) -> pd.DataFrame:
    """The certification log of ``m`` smoothed with ``noise`` at std ``sigma`` (loaded, or computed
    resumably through the engine and stored). One :class:`Smooth` per model and noise type
    (:func:`rsbook.papers.common.smooth_for`)."""
    s = s or settings(profile)
    cfg = certify_config(m, noise, sigma, profile, every, n, seed, s)

    def build() -> Smooth:
        conditioned = isinstance(m, Method) and m.noise_conditioned
        # a denoised model runs eager: compiling the U-Net gains little on CPU (measured within a few
        # percent) and costs a compilation per model and noise type
        return Smooth(certified_model(m, noise, store, device, progress), 10, noise_conditioned=conditioned,
                      compile=False if conditioned else None)

    smooth = smooth_for((CHAPTER, config_key(m), noise, str(device)), build)
    subset = test_subset("cifar10", cfg.every)
    return certification_log(cfg, smooth, subset, store, batch_size=s.certify_batch, progress=progress)


def white_box_gaussian_log(sigma: float, profile: str, device: torch.device | str = "cpu", progress: bool = True,
                           seed: int = 0, s: Settings | None = None) -> pd.DataFrame:
    """White-box Gaussian smoothing on this chapter's test images: chapter 0's model for ``sigma``
    (trained into chapter 0's store first if absent).

    Where chapter 0 has a stored log at this chapter's ``n0``, ``n`` and ``alpha`` on a superset
    of its images (``cpu``), that log is loaded and restricted to this chapter's images;
    otherwise chapter 0's model is certified here, at this chapter's settings, into this
    chapter's store.
    """
    s = s or settings(profile)
    cfg, st, batch = white_box_gaussian_plan(sigma, profile, seed, s)
    model = cohen2019.load_model(cfg.model, cohen2019.store(profile), device, progress)
    log = certification_log(cfg, Smooth(model, 10), test_subset("cifar10", cfg.every), st, batch_size=batch, progress=progress)
    return log[log["idx"] % s.every == 0].reset_index(drop=True)


def white_box_gaussian_plan(sigma: float, profile: str, seed: int = 0,
                            s: Settings | None = None) -> tuple[CertifyConfig, ArtifactStore, int | None]:
    """Where :func:`white_box_gaussian_log` gets its log: ``(config, store, batch size)``."""
    s, s0 = s or settings(profile), cohen2019.settings(profile)
    model_cfg = cohen2019.cifar_config(sigma, profile, seed=seed)
    if (s.n0, s.n, s.alpha) == (s0.n0, s0.n, s0.alpha) and s.every % s0.every == 0:
        cfg0 = cohen2019.certify_config(model_cfg, sigma, profile, seed=seed)
        if cohen2019.store(profile).exists(cfg0, "tsv"):
            return cfg0, cohen2019.store(profile), s0.certify_batch
    return certify_config(model_cfg, "gaussian", sigma, profile, seed=seed, s=s), store(profile), s.certify_batch


def planned_work(profile: str, seed: int = 0, s: Settings | None = None) -> Plan:
    """Every model and certification log the chapter computes, in its order."""
    s = s or settings(profile)
    images = lambda k: -(-TEST_SIZES["cifar10"] // k)  # noqa: E731 -- ceil
    clf = classifier_config(profile, seed)
    white = [white_box_config(nz, s.other_sigma, profile, seed) for nz in ("laplace", "uniform")]
    dncnns = [dncnn_config(sg, profile, seed=seed) for sg in s.sigmas]
    models = [clf, score_config(profile, seed), *dncnns, *white]
    certs = []
    for sg in s.sigmas:
        for kind in METHODS:
            certs.append((method(kind, profile, sg, seed=seed), "gaussian", sg))
    certs.append((method("one_step", profile, seed=seed), "gaussian", s.unseen_sigma))
    for nz, w in zip(("laplace", "uniform"), white):
        certs += [(method("none", profile, seed=seed), nz, s.other_sigma), (method("multi_step", profile, seed=seed), nz, s.other_sigma),
                  (w, nz, s.other_sigma)]
    planned = []
    for m, nz, sg in certs:
        cfg = certify_config(m, nz, sg, profile, seed=seed, s=s)
        planned.append(Planned(cfg, rate_key(m), images(cfg.every)))
    return Plan(trainings=models, certifications=planned)


def rate_key(m: Method | TrainConfig | dict) -> str:
    """What a certification's speed depends on, as a label: the classifier's architecture, and
    the denoiser's with its evaluations per sample (a stored config's dict gives the same label)."""
    d = m if isinstance(m, dict) else dataclasses.asdict(m)
    if "kind" not in d:
        return d["arch"]
    if d["kind"] == "none":
        return d["classifier"]["arch"]
    a = d.get("anneal")
    return f"{d['classifier']['arch']} behind {d['denoiser']['arch']} x{a['levels'] * a['steps'] if a else 1}"


def announce_work(profile: str, store: ArtifactStore, seed: int = 0, s: Settings | None = None) -> float | None:
    """Print what this chapter run will compute and about how long it takes."""
    s = s or settings(profile)
    plan = planned_work(profile, seed, s)
    models, certs = plan.trainings, list(plan.certifications)
    here = store.root
    for sg in s.sigmas:  # white-box smoothing: chapter 0's models, certified here where chapter 0 has no log to reuse
        cfg, st, _ = white_box_gaussian_plan(sg, profile, seed, s)
        if st.root == here:
            certs.append(Planned(cfg, rate_key(cfg.model), -(-TEST_SIZES["cifar10"] // cfg.every)))
        if not cohen2019.store(profile).exists(cfg.model, "pt"):
            print(f"White-box smoothing at sigma = {sg:g} needs chapter 0's model, which is not stored: it is trained first "
                  f"({cfg.model.arch}, {cfg.model.epochs} epochs) into chapter 0's store.", flush=True)
    return announce(store, models, certs, full_train=TRAIN_SIZES, rate_key=rate_key)


# -- published numbers, shown beside ours, never used as ours --------------------------------------

TABLE1_SOURCE = "the paper's Table 1: CIFAR-10, ResNet-110, N = 10,000, alpha = 0.001 (noise level per entry not stated)"
TABLE1_RADII = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)

#: The paper's Table 1 (CIFAR-10 certified accuracy, %, at l2 radius 0.25 ... 1.5).
TABLE1: dict[str, tuple[int, ...]] = {
    "white-box smoothing (Cohen et al.)": (59, 45, 31, 21, 18, 13),
    "denoised, query access (Salman et al.)": (45, 20, 15, 13, 11, 10),
    "denoised, full access (Salman et al.)": (56, 41, 28, 19, 16, 13),
    "denoised, score network, one-step (the paper)": (60, 42, 28, 19, 11, 6),
}

#: The paper's Table 2 (ImageNet, ResNet-50), for the paper-profile option; not run here.
TABLE2: dict[str, tuple[int, ...]] = {
    "white-box smoothing (Cohen et al.)": (62, 52, 45, 39, 34, 29),
    "denoised, query access (Salman et al.)": (48, 31, 19, 12, 7, 4),
    "denoised, full access (Salman et al.)": (50, 33, 20, 14, 11, 6),
    "denoised, score network, one-step (the paper)": (56, 41, 30, 24, 17, 11),
}


# -- ImageNet (the paper's Table 2 and Figure 2 d-f): user-supplied data and weights -------------


@dataclass(frozen=True)
class ImageNetRun:
    """An ImageNet certification as in the paper's Table 2: torchvision's ResNet-50 behind a
    score-network denoiser, every ``every``-th validation image (100: the usual 500 images).

    ``classifier_weights`` is a state dict of ``torchvision.models.resnet50`` (for example the
    ``IMAGENET1K_V1`` file, downloaded by the user: nothing here touches the network).
    ``score_weights`` is a state dict of :class:`~rsbook.models.denoisers.ScoreUNet` of width
    ``score_width`` trained on ImageNet, e.g. ``train_denoiser(DenoiserConfig(dataset="imagenet",
    ...), train_set=imagenet_subset(root, "train", every=k))``. ImageNet is not shipped and this
    path was not run at ImageNet scale for the book (only its ``dry_run`` on a tiny fake folder).
    """

    root: str
    classifier_weights: str
    score_weights: str
    score_width: int = 128
    kind: str = "one_step"
    noise: str = "gaussian"
    sigma: float = 0.25
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    every: int = 100
    resolution: int = 224
    anneal: Anneal = Anneal(levels=5, steps=2)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("one_step", "multi_step"):
            raise ValueError(f"kind must be 'one_step' or 'multi_step', got {self.kind!r}")
        if self.kind == "one_step" and self.noise != "gaussian":
            raise ValueError(f"the one-step (Tweedie) denoiser is valid for Gaussian noise only, not {self.noise!r}; "
                             "use kind='multi_step'")


def imagenet_model(run: ImageNetRun, device: torch.device | str = "cpu") -> nn.Module:
    """``f(D(y, sigma))`` for ``run``: the ResNet-50 behind the one- or multi-step denoiser."""
    from ..models.denoisers import ScoreUNet
    from ..models.classifiers import build_model

    clf = build_model("resnet50", "imagenet", 1000)
    load_weights(clf[1], run.classifier_weights, "ResNet-50",
                  "pass a state dict of torchvision.models.resnet50 (e.g. torchvision's IMAGENET1K_V1 .pth file)")
    score = ScoreUNet(3, run.score_width)
    load_weights(score, run.score_weights, "score network",
                  f"pass a ScoreUNet state dict trained on ImageNet, and set score_width to its width (now {run.score_width})")
    score = score.eval().requires_grad_(False)
    denoiser = TweedieDenoiser(score) if run.kind == "one_step" else AnnealingDenoiser(score, run.noise, run.anneal)
    return for_inference(Denoised(denoiser, clf.eval().requires_grad_(False))).to(device)


def imagenet_certification(run: ImageNetRun, log_path: str, device: torch.device | str = "cpu",
                           batch_size: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Certify ``run`` through the engine into ``log_path`` (resumable per image, as every
    certification of the book), with the run and its provenance in ``<log_path>.json``."""
    import json
    from pathlib import Path

    from ..infra.artifacts import atomic_write_text
    from ..runs.runner import certify_dataset
    from ..infra.data import imagenet_subset
    from ..infra.distributed import on_rank_zero
    from ..infra.provenance import provenance

    model = imagenet_model(run, device)
    data = imagenet_subset(run.root, "val", run.every, run.resolution)
    meta = Path(str(log_path) + ".json")
    meta.parent.mkdir(parents=True, exist_ok=True)
    if meta.is_file() and Path(log_path).is_file():
        earlier = json.loads(meta.read_text()).get("run")
        if earlier != json.loads(json.dumps(dataclasses.asdict(run))):
            raise ValueError(f"{log_path} holds a certification of a different run ({meta} records it); "
                             "pass another log_path, or delete both files to start over")
    on_rank_zero(lambda: atomic_write_text(meta, json.dumps({"run": dataclasses.asdict(run), "provenance": provenance(device)},
                                                            indent=1) + "\n"), f"recording {meta}")
    smooth = Smooth(model, 1000, noise_conditioned=True, compile=False)
    return certify_dataset(smooth, data, run.n0, run.n, run.alpha, batch_size, log_path, seed=run.seed,
                           progress=progress, noise=(run.noise, run.sigma), run_config=dataclasses.asdict(run))


def synthetic_imagenet(folder: str, classes: int = 2, per_class: int = 2, resolution: int = 64,
                       score_width: int = 8, seed: int = 0, splits: tuple[str, ...] = ("val",)) -> ImageNetRun:
    """A tiny folder in ImageNet's layout (random JPEGs) and random-weight networks saved beside
    it: what the ``dry_run`` profile and the tests run the ImageNet path on. Its certificates
    mean nothing; it exercises loading, packing, the engine and the log. Under torchrun rank 0
    writes it (into ``folder``, which every rank must see) while the other ranks wait."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from ..models.denoisers import ScoreUNet
    from ..infra.distributed import on_rank_zero
    from ..models.classifiers import build_model

    root = Path(folder)

    def write() -> None:
        rng = np.random.default_rng(seed)
        for split in splits:
            for c in range(classes):
                d = root / split / f"n{c:08d}"
                d.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    Image.fromarray(rng.integers(0, 256, (resolution + 16, resolution + 16, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")
        torch.manual_seed(seed)
        torch.save(build_model("resnet50", "imagenet", 1000)[1].state_dict(), root / "resnet50.pth")
        torch.save(ScoreUNet(3, score_width).state_dict(), root / "score.pth")

    on_rank_zero(write, f"writing the synthetic ImageNet folder {root}")
    return ImageNetRun(str(root), str(root / "resnet50.pth"), str(root / "score.pth"), score_width=score_width,
                       resolution=resolution, every=1, n0=4, n=16, seed=seed)


# -- the chapter's analyses: one image set per table, the closed-form checks, the claims ----------

#: The chapter's labels of its certified models (rows of Table 1, lines of Figure 2).
LABELS = {"white": "white-box (chapter 0)", "none": "no denoiser", "dncnn": "DnCNN, MSE (Salman et al., query-free)",
          "one_step": "one-step (score network)", "multi_step": "multi-step (score network)"}
TOLERANCE_MAP = 0.05  # Theorem 3.2 check: relative deviation from the one-component closed form, sigma <= 0.5
TOLERANCE_PSNR_DB = 0.5  # unseen-sigma check: PSNR below the interpolation between training levels
SLIGHTLY = 0.10  # "slightly worse than white-box smoothing" (Figure 2): a gap of at most 10 points


def common_images(logs: Mapping[Any, pd.DataFrame]) -> dict[Any, pd.DataFrame]:
    """Every log restricted to the test images present in all of them (matched by ``idx``), in image order.

    A table or figure whose rows were certified on different subsets (e.g. a reader's
    ``multi_every`` that differs from ``every``) compares its rows on these images only.

    >>> a = pd.DataFrame({"idx": [0, 100, 200, 300], "correct": [1, 0, 1, 1]})
    >>> b = pd.DataFrame({"idx": [200, 0], "correct": [0, 1]})
    >>> [list(v["idx"]) for v in common_images({"a": a, "b": b}).values()]
    [[0, 200], [0, 200]]
    """
    if not logs:
        raise ValueError("common_images needs at least one log")
    for k, log in logs.items():
        if log["idx"].duplicated().any():
            raise ValueError(f"the log {k!r} lists a test image twice")
    shared = set.intersection(*({int(i) for i in log["idx"]} for log in logs.values()))
    if not shared:
        raise ValueError(f"the logs {list(logs)} share no test image")
    return {k: log[log["idx"].isin(shared)].sort_values("idx").reset_index(drop=True) for k, log in logs.items()}


def _epochs(k: int) -> str:
    return f"{k} epoch{'s' if k != 1 else ''}"


def _ordinal(k: int) -> str:
    return f"{k:,}" + ("th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th"))


def describe_images(log: pd.DataFrame) -> str:
    """Which test images a log holds, in words: ``"100 test images (every 100th: 0, 100, ..., 9,900)"``."""
    idx = sorted(int(i) for i in log["idx"])
    n = len(idx)
    steps = {b - a for a, b in itertools.pairwise(idx)}
    if n >= 3 and idx[0] == 0 and len(steps) == 1:
        k = steps.pop()
        return f"{n:,} test images (every {_ordinal(k)}: 0, {k:,}, ..., {idx[-1]:,})"
    return f"{n:,} test image{'s' if n != 1 else ''} (" + ", ".join(f"{i:,}" for i in idx[:4]) + (", ...)" if n > 4 else ")")


def images_plan(s: Settings, total: int = 0) -> str:
    """The test images of this run's certifications, in words (for the budget table)."""
    total = total or TEST_SIZES["cifar10"]
    one = f"every {_ordinal(s.every)} of the {total:,} ({-(-total // s.every):,})"
    if s.multi_every == s.every:
        return one + ", every method"
    both = math.lcm(s.every, s.multi_every)
    return (f"{one}; multi-step every {_ordinal(s.multi_every)} ({-(-total // s.multi_every):,}); tables with both "
            f"rows use the {-(-total // both):,} common ones (every {_ordinal(both)})")


def certified(log: pd.DataFrame, r: float) -> np.ndarray:
    """Per image, 1 if certified correct at radius ``r`` and 0 otherwise (the values the sign test pairs)."""
    return (log["correct"].to_numpy().astype(bool) & (log["radius"].to_numpy() >= r)).astype(int)


def best_sigma(logs: Mapping[tuple[str, float], pd.DataFrame], label: str, sigmas: Sequence[float], r: float) -> float:
    """The level at which ``label`` certifies most images at ``r`` (Table 1 reports the best over sigma)."""
    return max(sigmas, key=lambda s: certified(logs[(label, s)], r).mean())


def table1(gauss: Mapping[tuple[str, float], pd.DataFrame], sigmas: Sequence[float],
           radii: Sequence[float] = TABLE1_RADII) -> pd.DataFrame:
    """Table 1: certified accuracy (%) at each radius, best over ``sigmas``, for every method of
    ``gauss`` (``{(label, sigma): log}``), all on their common images, beside the paper's rows."""
    logs = common_images(gauss)
    rows = {}
    for m in dict.fromkeys(k for k, _ in logs):
        best = np.max(np.stack([certified_accuracy(logs[(m, s)], radii) for s in sigmas]), axis=0)
        rows[f"ours: {m}"] = {**{f"r={r:g}": 100 * b for r, b in zip(radii, best)}, "images": len(logs[(m, sigmas[0])]),
                              "clean acc. (r=0)": 100 * max(clean_accuracy(logs[(m, s)]) for s in sigmas)}
    for name, vals in TABLE1.items():
        rows[f"paper: {name}"] = {f"r={r:g}": v for r, v in zip(radii, vals)}
    return pd.DataFrame.from_dict(rows, orient="index")


def duration(seconds: float) -> str:
    """A wall time for prose: ``"263 s"``, ``"3,781 s (63 min)"``, ``"12,852 s (3.6 h)"``."""
    s = float(seconds)
    return format_duration(s) if s < 120 else f"{s:,.0f} s ({format_duration(s)})"


# Proposition 3.1 and Theorem 3.2 on the Gaussian mixture, with their negative controls

def toy_mixture() -> "mixture.GaussianMixture":
    """The chapter's 2-D mixture: three components, ``tau = 0.4``."""
    return mixture.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]), tau=0.4,
                                   weights=torch.tensor([0.5, 0.3, 0.2]))


def tweedie_table(mix: "mixture.GaussianMixture", learned: nn.Module, sigmas: Sequence[float], generator: torch.Generator,
                  draws: int = 20_000) -> pd.DataFrame:
    """Proposition 3.1 at each ``sigma``: Tweedie with the exact score against the posterior mean,
    the same at the wrong level ``sigma / 2`` (the negative control), and the MSEs of the noisy
    input, the optimum and Tweedie with the ``learned`` score."""
    rows = []
    for sg in sigmas:
        x = mix.sample(draws, generator)
        y = x + sg * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        exact = mix.mmse(y, sg)
        with torch.no_grad():
            est = tweedie(learned, y.float(), sg).double()
        rows.append({"sigma": sg, "max |Tweedie(exact score) - E[x|y]|": float((tweedie(mix.score, y, sg) - exact).abs().max()),
                     "control: the same at sigma / 2": float((tweedie(mix.score, y, sg / 2) - exact).abs().max()),
                     "MSE of y": _mse(y, x), "MSE of E[x|y] (optimal)": _mse(exact, x), "MSE of Tweedie(learned score)": _mse(est, x)})
    return pd.DataFrame(rows)


def _mse(d: torch.Tensor, x: torch.Tensor) -> float:
    return float(((d - x) ** 2).sum(1).mean())


def printed_sign_score(score: Callable, y: torch.Tensor, sigma: torch.Tensor | float, noise: str = "gaussian") -> Callable:
    """A score that makes :func:`~rsbook.methods.denoise.anneal` take the step the paper's Algorithm 1
    prints, ``x + a (s(x) + grad_x phi(x - y))``: adding ``-2 x`` the data term flips its sign."""
    sigma = torch.as_tensor(sigma, dtype=y.dtype).expand(y.shape[0])
    return lambda x, level: score(x, level) - 2 * data_gradient(noise, y, x, sigma)


MAP_COLUMNS = {"ours": "multi-step (fixed level), mixture", "closed": "closed form, one component", "noisy": "noisy input",
               "tweedie": "one-step (Tweedie), mixture", "printed": "control: the printed sign of Algorithm 1",
               "zero": "control: a zero score"}


def map_error_table(mix: "mixture.GaussianMixture", sigmas: Sequence[float], generator: torch.Generator, draws: int = 4000,
                    schedule: Anneal | None = None) -> pd.DataFrame:
    """Theorem 3.2 at each ``sigma``: the mean error ``E ||x_hat - x*||`` of Algorithm 1 at one fixed
    level (many small steps, the exact mixture score, ``y`` = a mode + noise) against the one-component
    closed form, beside the noisy input, Tweedie, and two wrong denoisers: the printed sign of
    Algorithm 1 and a zero score (the negative controls). ``schedule``: one level, 300 steps of
    ``eta = 0.05`` unless given."""
    schedule = schedule or Anneal(levels=1, steps=300, eta=0.05)
    rows = []
    for sg in map(float, sigmas):
        k = torch.multinomial(mix.weights, draws, replacement=True, generator=generator)
        xstar = mix.means[k]
        y = xstar + sg * torch.randn(xstar.shape, generator=generator, dtype=torch.float64)
        scores = {"ours": mix.score, "printed": printed_sign_score(mix.score, y, sg), "zero": _zero_score}
        out = {key: anneal(score, y, sg, "gaussian", schedule) for key, score in scores.items()}
        out.update(noisy=y, tweedie=tweedie(mix.score, y, sg))
        rows.append({"sigma": sg, MAP_COLUMNS["closed"]: mixture.map_error_single(sg, mix.tau, mix.means.shape[1]),
                     **{MAP_COLUMNS[key]: float((d - xstar).norm(dim=1).mean()) for key, d in out.items()}})
    table = pd.DataFrame(rows).set_index("sigma")[list(MAP_COLUMNS.values())]
    d = mix.means.shape[1]  # the relative standard error of a mean of ||U|| over the draws
    table.attrs.update(draws=draws, mc_error=math.sqrt(d / mixture.expected_norm(d) ** 2 - 1) / math.sqrt(draws))
    return table


def _zero_score(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def map_deviation(table: pd.DataFrame, column: str, up_to: float = 0.5) -> float:
    """The largest ``|column / closed form - 1|`` over the levels ``sigma <= up_to`` of :func:`map_error_table`."""
    t = table[table.index <= up_to + 1e-12]
    return float((t[column] / t[MAP_COLUMNS["closed"]] - 1).abs().max())


# the score network at a level it was not trained at

@dataclass(frozen=True)
class UnseenLevel:
    """The one-step denoiser's PSNR at ``sigma`` (between the training levels ``below`` and ``above``)
    against the interpolation (linear in ``log sigma``) of its PSNR there, and the negative control:
    the same network told the nearest training level instead of ``sigma``."""

    sigma: float
    below: float
    above: float
    psnr: float
    psnr_below: float
    psnr_above: float
    control: float
    tolerance_db: float = TOLERANCE_PSNR_DB

    @property
    def interpolated(self) -> float:
        t = math.log(self.sigma / self.below) / math.log(self.above / self.below)
        return self.psnr_below + t * (self.psnr_above - self.psnr_below)

    @property
    def nearest(self) -> float:
        return min((self.below, self.above), key=lambda v: abs(math.log(v / self.sigma)))

    @property
    def holds(self) -> bool:
        """No dip: the PSNR at ``sigma`` is at most ``tolerance_db`` below the interpolation."""
        return self.psnr >= self.interpolated - self.tolerance_db

    @property
    def control_fails(self) -> bool:
        return self.control < self.interpolated - self.tolerance_db


def unseen_level_psnr(score: nn.Module, x: torch.Tensor, sigma: float, levels: Sequence[float], seed: int = 0,
                      device: torch.device | str = "cpu") -> UnseenLevel:
    """:class:`UnseenLevel` for the one-step denoiser of ``score`` on the clean images ``x`` (the same
    noise draws, scaled, at every level)."""
    below, above = max(v for v in levels if v < sigma), min(v for v in levels if v > sigma)
    d = TweedieDenoiser(score)
    gen = lambda: torch.Generator(device).manual_seed(seed)  # noqa: E731
    psnr = lambda sg, den=d: denoising_psnr(den, x, Gaussian(float(sg)), generator=gen())  # noqa: E731
    nearest = min((below, above), key=lambda v: abs(math.log(v / sigma)))
    told = lambda y, s: d(y, torch.full_like(s, nearest))  # noqa: E731
    with torch.no_grad():
        return UnseenLevel(float(sigma), float(below), float(above), psnr(sigma), psnr(below), psnr(above), psnr(sigma, told))


def psnr_table(score: nn.Module, dncnns: Mapping[float, nn.Module], x: torch.Tensor, sigmas: Sequence[float],
               levels: Sequence[float], schedule: Anneal, seed: int = 0, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Mean PSNR of every denoiser at each ``sigma`` (the same noise for all), and whether ``sigma``
    is one of the score network's training ``levels``."""
    rows = []
    with torch.no_grad():
        for sg in sigmas:
            gen = lambda: torch.Generator(device).manual_seed(seed)  # noqa: E731
            row = {"sigma": sg, "a training level": "yes" if any(abs(sg - v) < 1e-3 for v in levels) else "no",
                   "noisy": denoising_psnr(lambda y, s: y, x, Gaussian(float(sg)), generator=gen()),
                   "one-step": denoising_psnr(TweedieDenoiser(score), x, Gaussian(float(sg)), generator=gen()),
                   "multi-step": denoising_psnr(AnnealingDenoiser(score, "gaussian", schedule), x, Gaussian(float(sg)), generator=gen())}
            for s2, d in dncnns.items():
                row[f"DnCNN (trained at {s2:g})"] = denoising_psnr(d, x, Gaussian(float(sg)), generator=gen())
            rows.append(row)
    return pd.DataFrame(rows).set_index("sigma")


# what ran: the schedule and its cost

def schedule_table(schedule: Anneal, sigmas: Sequence[float]) -> pd.DataFrame:
    """The multi-step schedule that runs at each smoothing ``sigma``: the levels ``sigma_i``, the steps
    ``a_i = eta sigma_i^2`` and the data term's weight per step ``a_i / sigma^2`` (Gaussian noise)."""
    rows = []
    for sg in sigmas:
        for i, f in enumerate(schedule.factors(), 1):
            lv = sg * f
            a = schedule.eta * lv**2
            rows.append({"smoothing sigma": sg, "level i": i, "sigma_i": lv, "step a_i = eta sigma_i^2": a,
                         "data-term weight a_i / sigma^2": a / sg**2, "steps T": schedule.steps})
    return pd.DataFrame(rows)


class _Counting(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x, sigma)


def score_evaluations(score: nn.Module, schedule: Anneal, x: torch.Tensor, sigma: float = 0.25) -> dict[str, int]:
    """Score-network evaluations per denoised noise sample, counted by a wrapper around ``score``
    while each denoiser denoises the batch ``x`` once (every call evaluates every row once)."""
    counter = _Counting(score)
    s = torch.full((x.shape[0],), float(sigma), device=x.device)
    out = {}
    with torch.no_grad():
        for kind, den in (("one_step", TweedieDenoiser(counter)), ("multi_step", AnnealingDenoiser(counter, "gaussian", schedule))):
            counter.calls = 0
            den(x, s)
            out[kind] = counter.calls
    return out


def cost_table(gauss: Mapping[tuple[str, float], pd.DataFrame], sigma: float, n0: int, n: int,
               evaluations: Mapping[str, int]) -> pd.DataFrame:
    """Seconds per certified image (from the logs, on their common images) and score-network
    evaluations per image at ``sigma``; ``evaluations`` as counted by :func:`score_evaluations`."""
    logs = common_images({m: log for (m, s), log in gauss.items() if s == sigma})
    base = float(logs[LABELS["none"]]["time"].mean())
    evals = {LABELS["one_step"]: evaluations["one_step"], LABELS["multi_step"]: evaluations["multi_step"]}
    return pd.DataFrame([{"method": m, "seconds / image": float(log["time"].mean()),
                          "score-network evaluations / image": (n0 + n) * evals.get(m, 0),
                          "ratio to the plain classifier": float(log["time"].mean()) / base} for m, log in logs.items()]
                        ).set_index("method")


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# the claims

def not_worse_by(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, margin: float, what: str) -> Check:
    """Is ``a`` at most ``margin`` below ``b``, paired by image? The 95 % Student's t interval of the mean
    of ``b - a``: holds when it lies below ``margin``, fails when it lies above, undecided otherwise."""
    e = mean(np.asarray(b, dtype=float) - np.asarray(a, dtype=float))
    outcome = True if e.high < margin else (False if e.low > margin else None)
    return Check(outcome, f"{what}: gap {e.value:.2f}, 95% interval [{e.low:.2f}, {e.high:.2f}] ({e.how}, {e.n} paired "
                          f"images); holds below {margin:.2f}, fails above")


@dataclass(frozen=True)
class Networks:
    """The sizes and training times of the chapter's networks (for the baseline comparison)."""

    score_parameters: int
    score_seconds: float
    score_epochs: int
    dncnn_parameters: int
    dncnn_seconds: float
    dncnn_epochs: int
    dncnn_shape: str
    classifier_arch: str
    classifier_epochs: int
    classifier_seconds: float


def claims(profile: str, s: Settings, gauss: Mapping[tuple[str, float], pd.DataFrame],
           noises: Mapping[str, Mapping[str, pd.DataFrame]], unseen: pd.DataFrame, prop31: pd.DataFrame,
           thm32: pd.DataFrame, unseen_psnr: UnseenLevel, evaluations: Mapping[str, int], nets: Networks,
           imagenet: Mapping[float, pd.DataFrame] | None = None) -> Claims:
    """The chapter's claims table (:mod:`rsbook.book.claims`) from its logs and tables.

    ``gauss``: Table 1's logs ``{(label, sigma): log}`` (:data:`LABELS`); ``noises``: Figure 2's
    ``{noise: {label: log}}`` for ``"gaussian"`` (at ``s.sigmas[0]``), ``"laplace"`` and
    ``"uniform"``; ``unseen``: the one-step log at ``s.unseen_sigma``; ``prop31``, ``thm32``,
    ``unseen_psnr``: :func:`tweedie_table`, :func:`map_error_table`, :func:`unseen_level_psnr`;
    ``evaluations``: :func:`score_evaluations`; ``imagenet``: real ImageNet logs by sigma, if run.
    Every comparison is paired on the images common to its rows.
    """
    c = Claims(CHAPTER, profile)
    logs = common_images(gauss)
    sig = list(s.sigmas)
    one, white, none, dn = LABELS["one_step"], LABELS["white"], LABELS["none"], LABELS["dncnn"]
    cap = max(max_certified_radius(make_noise("gaussian", v), s.n, s.alpha) for v in sig)
    paper_one = TABLE1["denoised, score network, one-step (the paper)"]
    paper_white = TABLE1["white-box smoothing (Cohen et al.)"]
    paper_query = TABLE1["denoised, query access (Salman et al.)"]
    paper_full = TABLE1["denoised, full access (Salman et al.)"]
    budget = (f"margin {MARGIN:.2f} for our smaller budget: a {nets.classifier_arch} classifier trained "
              f"{duration(nets.classifier_seconds)} instead of ResNet-110, a {nets.score_parameters:,}-parameter score "
              f"network trained {_epochs(nets.score_epochs)}, N = {s.n:,} instead of 10,000; best over sigma in {sig}")

    def at(label: str, r: float) -> tuple[np.ndarray, float]:
        v = best_sigma(logs, label, sig, r)
        return certified(logs[(label, v)], r), v

    # Table 1, the one-step row
    for r, p in zip(TABLE1_RADII, paper_one):
        k, v = at(one, r)
        c.numeric(f"one-step denoiser, certified accuracy at l2 r = {r:g} (Table 1)", p / 100, proportion(int(k.sum()), k.size),
                  comparable=r < cap, why=(f"{budget} (here sigma = {v:g})" if r < cap else
                                           f"r = {r:g} is above the largest radius any image can get at N = {s.n:,} with "
                                           f"these sigmas ({cap:.2f}): ours is 0 by construction"))
    # the baselines: not at a matched budget
    (o25, _), (o50, _), (d25, _), (d50, _) = at(one, 0.25), at(one, 0.5), at(dn, 0.25), at(dn, 0.5)
    sign = greater(o25, d25, "one-step > our DnCNN at r = 0.25")
    paper_depth, paper_width = _SETTINGS["paper"].dncnn_depth, _SETTINGS["paper"].dncnn_width
    from ..models.denoisers import DnCNN

    salman_params = parameters(DnCNN(3, paper_depth, paper_width))
    c.rows.append(Claim(
        "the one-step denoiser beats Salman et al.'s denoisers (Table 1)",
        f"{paper_one[0]}/{paper_one[1]} vs {paper_query[0]}/{paper_query[1]} % (query access), {paper_full[0]}/"
        f"{paper_full[1]} % (full access) at r = 0.25/0.5",
        f"{100 * o25.mean():.0f}/{100 * o50.mean():.0f} vs {100 * d25.mean():.0f}/{100 * d50.mean():.0f} % "
        f"(our MSE DnCNN {nets.dncnn_shape})", profile, "not comparable",
        f"the two denoisers had very different budgets: our score network has {nets.score_parameters:,} parameters and "
        f"trained {_epochs(nets.score_epochs)} in {duration(nets.score_seconds)}; our DnCNN {nets.dncnn_shape} has "
        f"{nets.dncnn_parameters:,} and trained {_epochs(nets.dncnn_epochs)} in {duration(nets.dncnn_seconds)}, with MSE "
        "alone. The paper's baselines are Salman et al.'s denoisers, a DnCNN "
        f"{paper_depth}x{paper_width} ({salman_params:,} parameters) trained with a classifier in the loop (the stability "
        "objective, with query or full access). A fair comparison needs that denoiser trained here (DenoiserStability "
        f"through our classifier, or through surrogate classifiers for query access) for the score network's "
        f"{duration(nets.score_seconds)}, and certified on the same images at the same N",
        f"for information, not a verdict: {sign.test}"))
    # white-box smoothing
    for r, p1, pw in zip((0.25, 0.5), paper_one, paper_white):
        (a, va), (b, vb) = at(one, r), at(white, r)
        c.numeric(f"the one-step denoiser approaches white-box smoothing: one-step minus white-box certified accuracy at "
                  f"l2 r = {r:g} (Table 1: {p1} vs {pw} %)", (p1 - pw) / 100, mean(a - b),
                  why=f"paired on our {a.size} images (one-step at sigma = {va:g}, chapter 0's white-box model at {vb:g}); "
                      f"{budget}")
    nod, _ = at(none, 0.25)
    c.qualitative("a denoiser is needed: without one the off-the-shelf classifier certifies little (l2 r = 0.25)", "(implied)",
                  f"one-step {o25.mean():.2f} vs no denoiser {nod.mean():.2f}", [greater(o25, nod, "one-step > no denoiser")],
                  why="the same classifier and images; fails if the classifier alone certified as many")
    # Figure 2 (a-c): the multi-step denoiser under each noise type
    panel = {"gaussian": "(a)", "laplace": "(b)", "uniform": "(c)"}
    for nz, fl in noises.items():
        fl = common_images(fl)
        wb = next(k for k in fl if k.startswith("white-box"))
        sg = s.sigmas[0] if nz == "gaussian" else s.other_sigma
        norm = make_noise(nz, sg).norm
        ms, w, no = (certified(fl[k], 0.25) for k in (LABELS["multi_step"], wb, none))
        second = (greater(w, ms, "white-box > multi-step") if nz == "uniform" else
                  not_worse_by(ms, w, SLIGHTLY, "white-box minus multi-step"))
        c.qualitative(f"Figure 2 {panel[nz]}: with {nz} noise (sigma = {sg:g}) the same score network's multi-step denoiser "
                      f"certifies the off-the-shelf classifier, " + ("below white-box smoothing" if nz == "uniform" else
                                                                    "slightly below white-box smoothing") + f" ({norm} r = 0.25)",
                      "white-box better (uniform fits CNNs, the paper says)" if nz == "uniform" else
                      f"slightly worse than white-box (curves; ours: 'slightly' = within {SLIGHTLY:.2f})",
                      f"multi-step {ms.mean():.2f}, white-box {w.mean():.2f}, no denoiser {no.mean():.2f} ({ms.size} images)",
                      [greater(ms, no, "multi-step > no denoiser"), second],
                      why=f"white-box: {'chapter 0' if nz == 'gaussian' else 'a classifier trained with this noise'}; "
                          f"multi-step schedule L x T = {s.anneal.levels} x {s.anneal.steps}")
    # one network for any level
    u = unseen_psnr
    psnr_test = (f"PSNR at least the interpolation minus {u.tolerance_db:g} dB ({u.interpolated - u.tolerance_db:.2f}): "
                 f"{u.holds}; negative control, the network told the nearest training level {u.nearest:.3g}: "
                 f"{u.control:.2f} dB, below {u.interpolated - u.tolerance_db:.2f} (it must fail): {u.control_fails}")
    psnr_ours = f"PSNR {u.psnr:.2f} dB (interpolated from the training levels {u.below:.3g}, {u.above:.3g}: {u.interpolated:.2f})"
    lo = [v for v in sig if v < s.unseen_sigma]
    hi = [v for v in sig if v > s.unseen_sigma]
    if lo and hi:  # certified accuracy at the unseen level against the run's levels on both sides of it
        lo_s, hi_s = max(lo), min(hi)
        seen = common_images({lo_s: logs[(one, lo_s)], hi_s: logs[(one, hi_s)], s.unseen_sigma: unseen})
        t = (s.unseen_sigma - lo_s) / (hi_s - lo_s)
        k_u = certified(seen[s.unseen_sigma], 0.25)
        interp = (1 - t) * certified(seen[lo_s], 0.25).mean() + t * certified(seen[hi_s], 0.25).mean()
        e_u = proportion(int(k_u.sum()), k_u.size)
        ours = (f"certified accuracy {e_u.value:.2f} at l2 r = 0.25 (interpolated from sigma = {lo_s:g}, {hi_s:g}: "
                f"{interp:.2f}); {psnr_ours}")
        checks = [e_u.covers(interp, MARGIN), u.holds, u.control_fails]
        test = (f"the interpolation {interp:.2f} in our interval [{e_u.low:.2f}, {e_u.high:.2f}] (Clopper-Pearson, "
                f"{e_u.n} images) +- margin {MARGIN:.2f}: {e_u.covers(interp, MARGIN)}; {psnr_test}")
    else:  # e.g. a run at one sigma: no certified level on both sides to interpolate, the PSNR checks alone
        ours, checks = psnr_ours, [u.holds, u.control_fails]
        test = (f"{psnr_test}; the certified-accuracy check needs run sigmas on both sides of {s.unseen_sigma:g} "
                f"(this run: {', '.join(f'{v:g}' for v in sig)})")
    c.qualitative(f"one score network for any noise level, without retraining (sigma = {s.unseen_sigma:g}, not a training "
                  "level)", "any sigma", ours, checks, test=test,
                  why="a denoiser that only worked at its training levels would dip between them; the margin allows for the "
                      "interpolation's own sampling error")
    # the closed forms
    dev31, ctl31 = float(prop31["max |Tweedie(exact score) - E[x|y]|"].max()), float(prop31["control: the same at sigma / 2"].min())
    c.qualitative("Proposition 3.1: Tweedie's formula with the exact score is the MMSE denoiser E[x | y]", "exact",
                  f"max deviation {dev31:.1e}", [dev31 < 1e-8, ctl31 > 1e-2],
                  test=f"max |Tweedie - E[x|y]| over {len(prop31)} levels {dev31:.1e} < 1e-8 (fails above); negative control, "
                       f"Tweedie at sigma / 2: at least {ctl31:.2f} > 1e-2 (it must fail)")
    d_ok = map_deviation(thm32, MAP_COLUMNS["ours"])
    d_printed, d_zero = map_deviation(thm32, MAP_COLUMNS["printed"]), map_deviation(thm32, MAP_COLUMNS["zero"])
    ours_err = thm32[MAP_COLUMNS["ours"]].to_numpy()
    rising = bool(np.all(np.diff(ours_err) > 0))
    c.qualitative("Theorem 3.2: the multi-step (MAP) error is the strongly convex case's, growing with sigma",
                  "bound increasing in sigma, 0 at sigma = 0 (printed formula garbled)",
                  f"within {d_ok:.1%} of the closed form for sigma <= 0.5; increasing: {rising}",
                  [d_ok <= TOLERANCE_MAP, rising, d_printed > TOLERANCE_MAP, d_zero > TOLERANCE_MAP],
                  test=f"max relative deviation from the one-component closed form for sigma <= 0.5: {d_ok:.1%} <= "
                       f"{TOLERANCE_MAP:.0%} (fails above); increasing over sigma = {', '.join(f'{v:g}' for v in thm32.index)}; "
                       f"negative controls (they must fail): the printed sign of Algorithm 1, error {d_printed + 1:,.0f}x the "
                       f"closed form's; a zero score, {d_zero:.1%} off",
                  why=f"the exact mixture score; {thm32.attrs.get('draws', 0):,} draws per level (Monte-Carlo error of a "
                      f"level's mean about {thm32.attrs.get('mc_error', float('nan')):.1%})")
    # the cost
    timed = common_images({k: logs[(k, sig[0])] for k in (one, LABELS["multi_step"])})
    t_one, t_multi = (float(timed[k]["time"].mean()) for k in (one, LABELS["multi_step"]))
    c.numeric("the multi-step denoiser costs L x T times the one-step's score-network evaluations (counted)",
              float(s.anneal.evaluations), exact(evaluations["multi_step"] / evaluations["one_step"], "counted"), margin=0.0,
              fmt="{:g}", why=f"L x T = {s.anneal.levels} x {s.anneal.steps} is Algorithm 1's loop; counted by a wrapper "
                              f"around the network while each denoiser denoises one batch ({evaluations['multi_step']} vs "
                              f"{evaluations['one_step']} calls; any other count fails). In seconds per certified image, "
                              f"from the logs: {t_multi:.1f} vs {t_one:.1f} ({t_multi / t_one:.1f}x; the classifier and the "
                              "engine are paid once per sample, and the logs ran at different loads)")
    # not reproduced
    if imagenet:
        for r, p in zip(TABLE1_RADII, TABLE2["denoised, score network, one-step (the paper)"]):
            v = max(imagenet, key=lambda q: certified(imagenet[q], r).mean())
            k = certified(imagenet[v], r)
            c.numeric(f"ImageNet, one-step denoiser, certified accuracy at l2 r = {r:g} (Table 2)", p / 100,
                      proportion(int(k.sum()), k.size), why=f"margin {MARGIN:.2f}; the reader's ImageNet run, sigma = {v:g}")
    else:
        c.not_reproduced_here("Table 2 (ImageNet, ResNet-50, one-step denoiser)",
                              "ImageNet and an ImageNet score network do not ship with the book, and the run needs a GPU; the "
                              "path exists (imagenet_root, imagenet_classifier, imagenet_score) and its dry run is exercised")
    c.not_reproduced_here("Figure 2 (d-f) (ImageNet, multi-step denoiser, Gaussian / Laplace / uniform)",
                          "ImageNet is not shipped and a multi-step ImageNet certification needs a GPU")
    c.not_reproduced_here("Figure 1 (ImageNet, sigma = 1.0): the multi-step denoiser gives sharper edges than the one-step",
                          "ImageNet; the chapter shows the CIFAR-10 analogue, and sharpness is looked at, not measured")
    c.not_reproduced_here("Appendix C: multi-scale training helps the score network; a stronger classifier certifies more",
                          "the appendix is not in the text we have, and it needs a second (single-scale) score network and a "
                          "second classifier")
    return c


def setting_note(s: Settings, nets: Networks, score_width: int, gauss: Mapping[tuple[str, float], pd.DataFrame]) -> str:
    """The claims table's note: our setting against the paper's."""
    log = next(iter(common_images(gauss).values()))
    return (f"**Setting.** Ours: {nets.classifier_arch} classifier ({_epochs(nets.classifier_epochs)} without noise in "
            f"{duration(nets.classifier_seconds)}), score U-Net width {score_width} ({_epochs(nets.score_epochs)} in "
            f"{duration(nets.score_seconds)}), DnCNN {nets.dncnn_shape}, N = {s.n:,}, n0 = {s.n0}, alpha = {s.alpha:g}, "
            f"{describe_images(log)} for every comparison, sigma in {list(s.sigmas)}. Paper: ResNet-110, a larger score "
            "network, N = 10,000, 500 test images, sigma up to 1.0.")


def speed_table(clf: nn.Module, score: nn.Module, dncnn: nn.Module, dncnn_name: str, device: torch.device | str,
                quick: bool = False) -> tuple[pd.DataFrame, str]:
    """Forward throughput (images/s) of the classifier, the score U-Net and the DnCNN at the engine's
    batch sizes, beside diffusers' ``UNet2DModel`` where diffusers is installed (built from a config,
    nothing downloaded); returns the table and a note on the U-Net comparison. ``quick``: one small
    batch, briefly (smoke and dry runs)."""
    import os
    import warnings

    from ..core.engine import batch_candidates, forward_throughput

    def fw(model: Callable, conditioned: bool) -> float:
        f = (lambda b: model(b, torch.full((b.shape[0],), 0.25, device=b.device))) if conditioned else model
        sizes = [8] if quick else [b for b in batch_candidates(device) if b <= 256]
        return max(forward_throughput(f, (3, 32, 32), device, sizes, seconds=0.05 if quick else 0.2).values())

    speed = {"classifier alone": fw(clf, False), "score U-Net alone": fw(score, True), dncnn_name: fw(dncnn, True)}
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        with warnings.catch_warnings():  # diffusers imports tqdm.auto, which warns that ipywidgets is absent
            warnings.simplefilter("ignore")
            from diffusers import UNet2DModel

        unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
                           down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3).eval().to(device)
        name = "diffusers UNet2DModel (32, 64, 64), no attention"
        speed[name] = fw(lambda b, s: unet(b, s).sample, True)
        ratio = speed["score U-Net alone"] / speed[name]
        note = (f"diffusers' `UNet2DModel` ({parameters(unet):,} parameters, 32-64-64 channels, no attention) runs at "
                f"{speed[name]:,.0f} images/s here, our score U-Net ({parameters(score):,} parameters) at "
                f"{speed['score U-Net alone']:,.0f}: "
                + (f"{ratio:.1f}x faster, which is why this profile uses ours. " if ratio >= 1 else
                   f"{1 / ratio:.1f}x slower, since this profile scales our network up. ")
                + "Their denoising quality at equal training was *not* compared: that needs a second score network "
                  "trained on the same budget.")
    except ImportError:
        note = ("diffusers is not installed here, so its `UNet2DModel` is not measured on this page; "
                "`pip install diffusers` and rerun to add it to the table.")
    df = pd.DataFrame({"images/s": speed})
    df["relative to the classifier"] = df["images/s"] / speed["classifier alone"]
    return df, note
