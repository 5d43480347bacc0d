"""Denoisers as stored artifacts (chapter 1): score networks and DnCNNs.

:class:`DenoiserConfig` names everything that determines a trained denoiser; its hash names
the artifact. The objective picks the training step from :mod:`rsbook.methods.denoise`:

* ``dsm``: multi-scale denoising score matching over ``levels`` geometric levels from
  ``sigma_max`` to ``sigma_min`` (a score network ``s(y, sigma)``; no labels, no classifier);
* ``mse``: Salman et al.'s MSE objective at one noise ``(noise, sigma)``;
* ``stability``: Salman et al.'s stability objective through the frozen ``classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..infra.artifacts import ArtifactStore
from ..core.noise import NOISES, make_noise
from ..infra.data import ImageDataset, load_train_subset
from ..models.denoisers import DENOISER_ARCHS, build_denoiser
from .fit import FitConfig, fit, load_or_fit

__all__ = ["DenoiserConfig", "OBJECTIVES", "train_denoiser", "trained_denoiser"]

OBJECTIVES = ("dsm", "mse", "stability")


@dataclass(frozen=True)
class DenoiserConfig:
    """Everything that determines a trained denoiser (its hash names the artifact)."""

    objective: str = "dsm"
    arch: str = "score_unet"
    width: int = 32
    depth: int = 17  # DnCNN only
    dataset: str = "cifar10"
    noise: str = "gaussian"  # mse / stability only
    sigma: float = 0.25  # mse / stability only
    sigma_max: float = 1.0  # dsm only
    sigma_min: float = 0.01  # dsm only
    levels: int = 10  # dsm only
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "cosine"
    augment: bool = True  # random crop (pad 4) + flip
    train_subset: int = 0  # 0: the whole training set
    max_batches: int = 0  # > 0: stop every epoch after that many batches (dry runs)
    classifier: Any = None  # stability only: the frozen classifier's TrainConfig
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.arch not in DENOISER_ARCHS:
            raise ValueError(f"arch must be one of {DENOISER_ARCHS}, got {self.arch!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {sorted(NOISES)}, got {self.noise!r}")
        if self.objective == "stability" and self.classifier is None:
            raise ValueError("the stability objective needs the classifier's config (classifier=...)")
        if self.objective == "dsm" and not (self.sigma_max > self.sigma_min > 0 and self.levels >= 2):
            raise ValueError(f"dsm needs sigma_max > sigma_min > 0 and levels >= 2, got {self.sigma_max}, {self.sigma_min}, {self.levels}")

    @property
    def fit_config(self) -> FitConfig:
        """Adam at ``lr`` with the schedule, no weight decay."""
        return FitConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer="adam", weight_decay=0.0,
                         schedule=self.schedule, augment=self.augment and self.dataset == "cifar10", seed=self.seed,
                         max_batches=self.max_batches)

    def sigmas(self) -> torch.Tensor:
        """The DSM training levels (geometric, ``sigma_max`` down to ``sigma_min``)."""
        from ..methods.denoise import geometric_sigmas

        return geometric_sigmas(self.sigma_max, self.sigma_min, self.levels)


def _build(cfg: DenoiserConfig) -> torch.nn.Module:
    channels = 1 if cfg.dataset == "mnist" else 3
    return build_denoiser(cfg.arch, channels, cfg.width, cfg.depth)


def _step(cfg: DenoiserConfig, store: ArtifactStore | None, device: torch.device | str):
    from ..methods import denoise

    if cfg.objective == "dsm":
        return denoise.DenoisingScoreMatching(cfg.sigmas())
    if cfg.objective == "mse":
        return denoise.DenoiserMSE(make_noise(cfg.noise, cfg.sigma))
    from .classifier import trained_model

    if store is None:
        raise ValueError("the stability objective loads its classifier from a store: pass store=")
    return denoise.DenoiserStability(trained_model(cfg.classifier, store, device=device), make_noise(cfg.noise, cfg.sigma))


def train_denoiser(
    cfg: DenoiserConfig,
    train_set: ImageDataset | None = None,
    work_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    store: ArtifactStore | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train the denoiser ``cfg`` describes; returns ``(model in eval mode, per-epoch history)``."""
    if train_set is None:
        train_set = load_train_subset(cfg.dataset, cfg.train_subset)
    elif cfg.train_subset:
        train_set = train_set.subset(torch.arange(min(cfg.train_subset, len(train_set))))
    torch.manual_seed(cfg.seed)  # only for weight initialisation, which has no generator argument
    model = _build(cfg)
    return fit(model, _step(cfg, store, device), cfg.fit_config, work_dir, data=train_set, device=device, progress=progress,
               desc=f"{cfg.arch} {cfg.objective}")


def trained_denoiser(
    cfg: DenoiserConfig,
    store: ArtifactStore,
    device: torch.device | str = "cpu",
    train_set: ImageDataset | None = None,
    progress: bool = True,
) -> torch.nn.Module:
    """Load the denoiser for ``cfg`` from ``store``, training (and storing) it first if needed."""
    return load_or_fit(cfg, store, lambda: _build(cfg),
                       lambda work: train_denoiser(cfg, train_set, work, device, progress, store), device)
