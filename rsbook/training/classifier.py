"""Noise-augmented base classifiers as stored artifacts (chapter 0's models, reused by later chapters).

:class:`TrainConfig` names everything that determines such a model; its hash names the
artifact. :func:`train` builds the model and runs :func:`~rsbook.training.fit.fit` with the
:class:`~rsbook.methods.augment.NoiseAugmentedCE` step; :func:`trained_model` loads the stored
model or trains and stores it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..infra.artifacts import ArtifactStore
from ..core.noise import NOISES, make_noise
from ..infra.data import NUM_CLASSES, ImageDataset, load_train_subset
from ..models.classifiers import build_model
from .fit import FitConfig, fit, load_or_fit

__all__ = ["TrainConfig", "train", "trained_model", "evaluate_accuracy", "training_step"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a noise-augmented classifier (its hash names the artifact)."""

    dataset: str = "cifar10"
    arch: str = "cnn4"
    noise: str = "gaussian"
    sigma: float = 0.25
    sigma_mode: str = "fixed"  # "fixed" or "universal" (sigma_i ~ U(0, sigma) per image)
    epochs: int = 90
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # "step" (x0.1 every `step_every` epochs) or "cosine" (per iteration)
    step_every: int = 30
    augment: bool = True  # random crop (pad 4) + flip; CIFAR only
    train_subset: int = 0  # 0: the whole training set; k > 0: its first k images
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sigma_mode not in ("fixed", "universal"):
            raise ValueError(f"sigma_mode must be 'fixed' or 'universal', got {self.sigma_mode!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {sorted(NOISES)}, got {self.noise!r}")
        if not self.sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")

    @property
    def fit_config(self) -> FitConfig:
        """The optimization part of this config."""
        return FitConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                         weight_decay=self.weight_decay, schedule=self.schedule, step_every=self.step_every,
                         augment=self.augment and self.dataset == "cifar10", seed=self.seed)


def training_step(cfg: TrainConfig):
    """The :class:`~rsbook.methods.augment.NoiseAugmentedCE` step that ``cfg`` describes."""
    from ..methods.augment import FixedSigma, NoiseAugmentedCE, UniformSigma

    return NoiseAugmentedCE(make_noise(cfg.noise, 1.0), FixedSigma(cfg.sigma) if cfg.sigma_mode == "fixed" else UniformSigma(cfg.sigma))


def _build(cfg: TrainConfig) -> torch.nn.Module:
    return build_model(cfg.arch, cfg.dataset, NUM_CLASSES.get(cfg.dataset, 10))


def train(
    cfg: TrainConfig,
    train_set: ImageDataset | None = None,
    work_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    channels_last: bool = True,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train a model for ``cfg``; returns ``(model in eval mode, per-epoch history)``.

    ``train_set`` defaults to the training set's first ``cfg.train_subset`` images (all if 0),
    from the shipped copy when it covers them. With ``work_dir`` the run checkpoints every
    epoch and resumes (see :func:`~rsbook.training.fit.fit`).
    """
    if train_set is None:
        train_set = load_train_subset(cfg.dataset, cfg.train_subset)
    elif cfg.train_subset:
        train_set = train_set.subset(torch.arange(min(cfg.train_subset, len(train_set))))
    torch.manual_seed(cfg.seed)  # only for weight initialisation, which has no generator argument
    model = _build(cfg)
    return fit(model, training_step(cfg), cfg.fit_config, work_dir, data=train_set, device=device, progress=progress,
               channels_last=channels_last, desc=f"{cfg.arch} sigma={cfg.sigma:g}")


def trained_model(
    cfg: TrainConfig,
    store: ArtifactStore,
    device: torch.device | str = "cpu",
    train_set: ImageDataset | None = None,
    progress: bool = True,
) -> torch.nn.Module:
    """Load the model for ``cfg`` from ``store``, training (and storing) it first if needed.

    The stored state_dict is fp16 (floating tensors); it is loaded back as fp32, and that
    fp32 model is the one every chapter certifies. Its normalization constants are not
    weights and are exact (see :class:`~rsbook.models.classifiers.Normalize`). The training set is read
    only if the model must be trained.
    """
    return load_or_fit(cfg, store, lambda: _build(cfg),
                       lambda work: train(cfg, train_set, work_dir=work, device=device, progress=progress), device)


@torch.inference_mode()
def evaluate_accuracy(model: torch.nn.Module, dataset: ImageDataset, batch_size: int = 500, device: torch.device | str = "cpu") -> float:
    """Clean accuracy of ``model`` (eval mode) on ``dataset``."""
    model.eval()
    correct = 0
    for x, y in dataset.batches(batch_size, device=device):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(dataset)
