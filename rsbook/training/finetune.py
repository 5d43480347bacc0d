"""Fine-tunings of a stored pretrained classifier, as stored artifacts (chapter 3).

* :class:`HeatConfig`: label-free HeatSmoothing (``timesteps`` implicit heat steps of
  :class:`~rsbook.methods.heat.HeatSmoothing`, ``epochs_per_timestep`` epochs each). The
  optimizer is SGD at a fixed learning rate, as the paper states for its ImageNet and
  adversarially trained runs (its CIFAR-10 optimizer is not given: the same is used there, a
  labelled choice). Labels are never read by the step.
* :class:`AdvConfig`: adversarial fine-tuning, SmoothAdv (Salman et al.) or l2-PGD adversarial
  training (Madry et al.), SGD with a cosine schedule.

A config's ``base`` is the pretrained model's config (a :class:`~rsbook.training.classifier.TrainConfig`
or another fine-tuning), so its hash names the whole chain. The base *model* is passed to the
``trained_*`` functions as a loader, called only if the fine-tuning must be trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import torch

from ..core.noise import Gaussian
from ..infra.artifacts import ArtifactStore
from ..infra.data import ImageDataset, load_train_subset
from .classifier import TrainConfig, _build
from .fit import FitConfig, fit, load_or_fit

__all__ = ["HeatConfig", "AdvConfig", "ADV_METHODS", "root_config", "finetune",
           "trained_finetuned"]

ADV_METHODS = ("smoothadv", "pgd")


def root_config(cfg) -> TrainConfig:
    """The :class:`TrainConfig` at the start of a chain of fine-tunings (architecture, dataset)."""
    while not isinstance(cfg, TrainConfig):
        cfg = cfg.base
    return cfg


def _check_base(base) -> None:
    if not isinstance(base, (TrainConfig, HeatConfig, AdvConfig)):
        raise TypeError(f"base must be the pretrained model's config (TrainConfig or a fine-tuning), got {type(base).__name__}")


@dataclass(frozen=True)
class HeatConfig:
    """A HeatSmoothing fine-tuning of the pretrained model ``base`` (its hash names the artifact)."""

    base: Union[TrainConfig, "AdvConfig"]
    sigma: float = 0.1
    timesteps: int = 5
    epochs_per_timestep: int = 1
    kappa: int = 10
    delta: float = 0.1
    penalty_scale: float | str = 1.0  # c in the loss: 1 (Algorithm 1), "h" (eq. 15) or "h/2" (target sigma; rsbook.methods.heat)
    imagenet_variant: bool = False
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    train_subset: int = 0
    max_batches: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_base(self.base)
        self.step()  # checks sigma, timesteps, kappa, delta

    def step(self):
        """The :class:`~rsbook.methods.heat.HeatSmoothing` step this config describes."""
        from ..methods.heat import HeatSmoothing

        return HeatSmoothing(self.sigma, self.epochs_per_timestep, self.timesteps, self.kappa, self.delta,
                             self.penalty_scale, self.imagenet_variant)

    @property
    def fit_config(self) -> FitConfig:
        """SGD at a fixed learning rate, no weight decay, for ``timesteps * epochs_per_timestep`` epochs.

        The authors' code instead re-initializes the model at every timestep and trains it from
        scratch with a decaying rate; this follows the paper's text (start from the pretrained
        model) and continues from the current model at each timestep."""
        root = root_config(self.base)
        return FitConfig(epochs=self.timesteps * self.epochs_per_timestep, batch_size=self.batch_size, lr=self.lr,
                         momentum=self.momentum, weight_decay=0.0, schedule="constant",
                         augment=root.augment and root.dataset == "cifar10", seed=self.seed, max_batches=self.max_batches)


@dataclass(frozen=True)
class AdvConfig:
    """An adversarial fine-tuning of ``base``: ``method`` ``smoothadv`` (SmoothAdv-PGD at Gaussian
    ``sigma`` with ``m`` noise draws) or ``pgd`` (l2-PGD adversarial training; ``sigma``, ``m`` unused)."""

    base: Union[TrainConfig, "HeatConfig", "AdvConfig"]
    method: str = "smoothadv"
    eps: float = 0.5
    steps: int = 4
    sigma: float = 0.1
    m: int = 1
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    train_subset: int = 0
    max_batches: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_base(self.base)
        if self.method not in ADV_METHODS:
            raise ValueError(f"method must be one of {ADV_METHODS}, got {self.method!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        self.step()

    def step(self):
        """The training step this config describes."""
        from ..methods.adversarial import PGDAdversarialTraining
        from ..methods.smoothadv import SmoothAdv

        if self.method == "pgd":
            return PGDAdversarialTraining(self.eps, self.steps)
        return SmoothAdv(Gaussian(self.sigma), self.m, self.eps, self.steps)

    @property
    def fit_config(self) -> FitConfig:
        """SGD with a cosine schedule from ``lr``, for ``epochs`` epochs."""
        root = root_config(self.base)
        return FitConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                         weight_decay=self.weight_decay, schedule="cosine", augment=root.augment and root.dataset == "cifar10",
                         seed=self.seed, max_batches=self.max_batches)


def finetune(
    cfg: HeatConfig | AdvConfig,
    base_model: torch.nn.Module,
    train_set: ImageDataset | None = None,
    work_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Fine-tune a copy of ``base_model`` (left untouched) as ``cfg`` says; returns ``(model, history)``.

    With ``work_dir`` the run checkpoints every epoch and resumes (:func:`~rsbook.training.fit.fit`)."""
    root = root_config(cfg)
    if train_set is None:
        train_set = load_train_subset(root.dataset, cfg.train_subset)
    elif cfg.train_subset:
        train_set = train_set.subset(torch.arange(min(cfg.train_subset, len(train_set))))
    model = _build(root)
    model.load_state_dict(base_model.state_dict())
    what = f"heat sigma={cfg.sigma:g}" if isinstance(cfg, HeatConfig) else f"{cfg.method} eps={cfg.eps:g}"
    return fit(model, cfg.step(), cfg.fit_config, work_dir, data=train_set, device=device, progress=progress,
               desc=f"{root.arch} {what}")


def trained_finetuned(
    cfg: HeatConfig | AdvConfig,
    store: ArtifactStore,
    base: Callable[[], torch.nn.Module],
    device: torch.device | str = "cpu",
    train_set: ImageDataset | None = None,
    progress: bool = True,
) -> torch.nn.Module:
    """The fine-tuned model for ``cfg`` from ``store``; fine-tunes ``base()`` (the pretrained
    model, loaded only then) and stores the result first if absent."""
    return load_or_fit(cfg, store, lambda: _build(root_config(cfg)),
                       lambda work: finetune(cfg, base(), train_set, work, device, progress), device)
