"""Label-free HeatSmoothing fine-tuning as a stored artifact (chapter 3).

:class:`HeatConfig` names a pretrained model (its :class:`~rsbook.training.classifier.TrainConfig`)
and the fine-tuning: ``timesteps`` implicit heat steps of
:class:`~rsbook.methods.heat.HeatSmoothing`, ``epochs_per_timestep`` epochs each. The optimizer
is SGD at a fixed learning rate, as the paper states for its ImageNet and adversarially trained
runs (its CIFAR-10 optimizer is not given: the same is used there, a labelled choice).
Labels are never read by the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import ArtifactStore
from ..data import ImageDataset, load_train_subset
from .classifier import TrainConfig, _build, trained_model
from .fit import FitConfig, fit, load_or_fit

__all__ = ["HeatConfig", "heat_finetune", "trained_heat_model"]


@dataclass(frozen=True)
class HeatConfig:
    """A HeatSmoothing fine-tuning of the pretrained model ``base`` (its hash names the artifact)."""

    base: TrainConfig
    sigma: float = 0.1
    timesteps: int = 5
    epochs_per_timestep: int = 1
    kappa: int = 10
    delta: float = 0.1
    penalty_scale: float = 1.0  # c in the loss: 1 as the paper's Algorithm 1 (see rsbook.methods.heat)
    imagenet_variant: bool = False
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    train_subset: int = 0
    max_batches: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.base, TrainConfig):
            raise TypeError(f"base must be the pretrained model's TrainConfig, got {type(self.base).__name__}")
        self.step()  # checks sigma, timesteps, kappa, delta

    def step(self):
        """The :class:`~rsbook.methods.heat.HeatSmoothing` step this config describes."""
        from ..methods.heat import HeatSmoothing

        return HeatSmoothing(self.sigma, self.epochs_per_timestep, self.timesteps, self.kappa, self.delta,
                             self.penalty_scale, self.imagenet_variant)

    @property
    def fit_config(self) -> FitConfig:
        """SGD at a fixed learning rate, no weight decay, for ``timesteps * epochs_per_timestep`` epochs."""
        return FitConfig(epochs=self.timesteps * self.epochs_per_timestep, batch_size=self.batch_size, lr=self.lr,
                         momentum=self.momentum, weight_decay=0.0, schedule="constant",
                         augment=self.base.augment and self.base.dataset == "cifar10", seed=self.seed,
                         max_batches=self.max_batches)


def heat_finetune(
    cfg: HeatConfig,
    base_model: torch.nn.Module,
    train_set: ImageDataset | None = None,
    work_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Fine-tune a copy of ``base_model`` (left untouched) as ``cfg`` says; returns ``(model, history)``."""
    if train_set is None:
        train_set = load_train_subset(cfg.base.dataset, cfg.train_subset)
    elif cfg.train_subset:
        train_set = train_set.subset(torch.arange(min(cfg.train_subset, len(train_set))))
    model = _build(cfg.base)
    model.load_state_dict(base_model.state_dict())
    return fit(model, cfg.step(), cfg.fit_config, work_dir, data=train_set, device=device, progress=progress,
               desc=f"{cfg.base.arch} heat sigma={cfg.sigma:g}")


def trained_heat_model(
    cfg: HeatConfig,
    store: ArtifactStore,
    base_store: ArtifactStore,
    device: torch.device | str = "cpu",
    train_set: ImageDataset | None = None,
    progress: bool = True,
) -> torch.nn.Module:
    """The fine-tuned model for ``cfg`` from ``store``; trains it first if absent, from the base
    model in ``base_store`` (itself trained first if absent)."""

    def train(work: Path):
        base = trained_model(cfg.base, base_store, device=device, train_set=train_set, progress=progress)
        return heat_finetune(cfg, base, train_set, work, device, progress)

    return load_or_fit(cfg, store, lambda: _build(cfg.base), train, device)
