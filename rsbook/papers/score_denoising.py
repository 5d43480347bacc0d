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
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ..artifacts import ArtifactStore, config_key
from ..book.eta import Planned, announce
from ..book.profiles import chapter_store, check_profile
from ..core.certify import Smooth
from ..core.runner import CertifyConfig, certification_log
from ..data import TEST_SIZES, TRAIN_SIZES, test_subset
from ..methods.denoise import Anneal, AnnealingDenoiser, Denoised, TweedieDenoiser
from ..models import for_inference, load_weights
from ..training.classifier import TrainConfig, trained_model
from ..training.denoiser import DenoiserConfig, trained_denoiser
from . import cohen2019

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
    """The settings at ``profile``; ``dry_run`` is ``paper`` with one batch per epoch and one
    epoch, two test images, n0 = 4, N = 16 and its first sigma only (derived, so it cannot
    drift from ``paper``; the multi-step schedule and the networks are the paper profile's).

    A reader's rerun overrides the certification: ``n`` samples, every ``every``-th test image
    (``multi_every`` for the multi-step denoiser), the Gaussian levels ``sigmas`` (a tuple or a
    comma-separated string, as papermill passes it); 0 or empty keeps the profile's. The
    networks are unchanged, so the stored ones are reused.
    """
    check_profile(profile)
    s = _SETTINGS["paper" if profile == "dry_run" else profile]
    if profile == "dry_run":
        s = dataclasses.replace(s, score_epochs=1, dncnn_epochs=1, max_batches=1, train_subset=s.score_batch, every=5000,
                                multi_every=5000, n0=4, n=16, sigmas=s.sigmas[:1])
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
    return CertifyConfig(model=model, noise=noise, sigma=sigma, n0=s.n0, n=n or s.n, alpha=s.alpha, dataset="cifar10",
                         every=every, seed=seed)


def certified_model(m: Method | TrainConfig, noise: str, store: ArtifactStore, device: torch.device | str = "cpu",
                    progress: bool = True) -> nn.Module:
    """The network the engine certifies for ``m``: ``f`` (``none``, white-box) or ``f(D(y, sigma))``.

    Every piece is loaded from ``store`` (trained first if absent); ``noise`` picks the
    annealing denoiser's data term.
    """
    if isinstance(m, TrainConfig):
        return for_inference(trained_model(m, store, device=device, progress=progress))
    if m.kind == "one_step" and noise != "gaussian":
        raise ValueError(f"the one-step (Tweedie) denoiser is valid for Gaussian noise only, not {noise!r}")
    clf = for_inference(trained_model(m.classifier, store, device=device, progress=progress))
    if m.kind == "none":
        return clf
    net = trained_denoiser(m.denoiser, store, device=device, progress=progress).eval().requires_grad_(False)
    denoiser = {"one_step": lambda: TweedieDenoiser(net), "dncnn": lambda: net,
                "multi_step": lambda: AnnealingDenoiser(net, noise, m.anneal)}[m.kind]()
    return for_inference(Denoised(denoiser, clf))


_SMOOTHS: dict[tuple, Smooth] = {}


def certification(m: Method | TrainConfig, noise: str, sigma: float, profile: str, store: ArtifactStore,
                  device: torch.device | str = "cpu", progress: bool = True, every: int = 0, n: int = 0,
                  seed: int = 0, s: Settings | None = None) -> pd.DataFrame:
    """The certification log of ``m`` smoothed with ``noise`` at std ``sigma`` (loaded, or computed
    resumably through the engine and stored). One :class:`Smooth` per model and noise type."""
    s = s or settings(profile)
    cfg = certify_config(m, noise, sigma, profile, every, n, seed, s)
    key = (config_key(m), noise, str(device))
    if key not in _SMOOTHS:
        conditioned = isinstance(m, Method) and m.noise_conditioned
        # a denoised model runs eager: compiling the U-Net gains little on CPU (measured within a few
        # percent) and costs a compilation per model and noise type
        _SMOOTHS[key] = Smooth(certified_model(m, noise, store, device, progress), 10, noise_conditioned=conditioned,
                               compile=False if conditioned else None)
    subset = test_subset("cifar10", cfg.every)
    return certification_log(cfg, _SMOOTHS[key], subset, store, batch_size=s.certify_batch, progress=progress)


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


def planned_work(profile: str, seed: int = 0, s: Settings | None = None) -> tuple[list, list[Planned]]:
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
    return models, planned


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
    models, certs = planned_work(profile, seed, s)
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
    ``score_weights`` is a state dict of :class:`~rsbook.denoiser_models.ScoreUNet` of width
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
    from ..denoiser_models import ScoreUNet
    from ..models import build_model

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

    from ..artifacts import atomic_write_text
    from ..core.runner import certify_dataset
    from ..data import imagenet_subset
    from ..distributed import on_rank_zero
    from ..provenance import provenance

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

    from ..denoiser_models import ScoreUNet
    from ..distributed import on_rank_zero
    from ..models import build_model

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
