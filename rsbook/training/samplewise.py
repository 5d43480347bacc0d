"""Pretrain-to-finetune sample-wise smoothing (paper 2, the book's reconstruction) as stored artifacts.

* :class:`SigmaAssignment`: each training image's level, the grid level maximizing MACER's soft
  radius under the pretrained model ``base`` on ``k`` noisy copies per level where the top class
  is right (:func:`~rsbook.methods.samplewise.choose_sigmas`; an image no level gets right keeps
  the smallest). Stored as a table (``idx``, ``label``, ``sigma``, one soft radius per level).
* :class:`SampleWiseConfig`: the fine-tuning of ``base`` with that table (Gaussian augmentation at
  each image's own level, :class:`~rsbook.methods.augment.PerSampleSigma`), SGD at a cosine rate.

The draws of the assignment come from the ``selector`` stream of each training image
(:mod:`rsbook.core.streams`), seeded by the config's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..core.noise import Gaussian
from ..infra.artifacts import ArtifactStore
from ..infra.data import ImageDataset, load_train_subset
from ..methods.augment import NoiseAugmentedCE, PerSampleSigma
from ..methods.samplewise import choose_sigmas, selection_generators
from .classifier import TrainConfig, _build
from .fit import FitConfig, fit, load_or_fit

__all__ = ["SigmaAssignment", "SampleWiseConfig", "assigned_sigmas", "trained_samplewise"]


@dataclass(frozen=True)
class SigmaAssignment:
    """The per-sample levels of the first ``train_subset`` training images (0: all) under ``base``."""

    base: TrainConfig
    grid: tuple[float, ...]
    k: int = 16
    train_subset: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.base, TrainConfig):
            raise TypeError(f"base must be the pretrained model's TrainConfig, got {type(self.base).__name__}")
        if not self.grid or min(self.grid) <= 0 or list(self.grid) != sorted(set(self.grid)) or self.k < 1:
            raise ValueError(f"need an increasing grid of positive levels and k >= 1, got grid={self.grid}, k={self.k}")


@dataclass(frozen=True)
class SampleWiseConfig:
    """The fine-tuning of ``assignment.base`` at the per-sample levels of ``assignment``."""

    assignment: SigmaAssignment
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_batches: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.assignment, SigmaAssignment):
            raise TypeError(f"assignment must be a SigmaAssignment, got {type(self.assignment).__name__}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")

    @property
    def base(self) -> TrainConfig:
        return self.assignment.base

    @property
    def dataset(self) -> str:
        return self.base.dataset

    @property
    def arch(self) -> str:
        return self.base.arch

    @property
    def fit_config(self) -> FitConfig:
        return FitConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                         weight_decay=self.weight_decay, schedule="cosine", augment=self.base.augment and self.dataset == "cifar10",
                         seed=self.seed, max_batches=self.max_batches)


def _train_set(cfg: SigmaAssignment, train_set: ImageDataset | None) -> ImageDataset:
    if train_set is None:
        return load_train_subset(cfg.base.dataset, cfg.train_subset)
    return train_set.subset(torch.arange(min(cfg.train_subset, len(train_set)))) if cfg.train_subset else train_set


def assigned_sigmas(cfg: SigmaAssignment, store: ArtifactStore, base: Callable[[], torch.nn.Module],
                    device: torch.device | str = "cpu", train_set: ImageDataset | None = None,
                    batch_size: int | None = None) -> pd.DataFrame:
    """The table of ``cfg`` from ``store``; computes it with ``base()`` (the pretrained model, in eval
    mode, loaded only then) first if absent."""

    def compute(out: Path, work: Path) -> dict:
        data = _train_set(cfg, train_set)
        x, y = data.images.float().div(255), data.labels
        gens = selection_generators(cfg.seed, range(len(data)), len(cfg.grid), device)
        picks = choose_sigmas(base(), list(x), cfg.grid, cfg.k, gens, labels=[int(v) for v in y], batch_size=batch_size)
        table = pd.DataFrame({"idx": range(len(data)), "label": y.tolist(), "sigma": [p.sigma for p in picks]})
        for j, s in enumerate(cfg.grid):
            table[f"soft_{s:g}"] = [round(p.soft[j], 6) for p in picks]
        table.to_csv(out, sep="\t", index=False)
        return {"images": len(data)}

    path, _ = store.load_or_compute(cfg, compute, "tsv", device=device)
    return pd.read_csv(path, sep="\t")


def trained_samplewise(cfg: SampleWiseConfig, store: ArtifactStore, base: Callable[[], torch.nn.Module],
                       device: torch.device | str = "cpu", train_set: ImageDataset | None = None,
                       progress: bool = True) -> torch.nn.Module:
    """The fine-tuned model for ``cfg`` from ``store``; else assigns the levels (stored too) and fine-tunes
    a copy of ``base()`` (the pretrained model, loaded once and only if needed) first."""
    loaded: list[torch.nn.Module] = []

    def pretrained() -> torch.nn.Module:
        if not loaded:
            loaded.append(base().eval())
        return loaded[0]

    def train(work: Path):
        table = assigned_sigmas(cfg.assignment, store, pretrained, device, train_set)
        data = _train_set(cfg.assignment, train_set)
        model = _build(cfg.base)
        model.load_state_dict(pretrained().state_dict())
        step = NoiseAugmentedCE(Gaussian(1.0), PerSampleSigma(torch.tensor(table["sigma"].to_numpy(), dtype=torch.float32)))
        return fit(model, step, cfg.fit_config, work, data=data, device=device, progress=progress,
                   desc=f"{cfg.arch} sample-wise fine-tuning")

    return load_or_fit(cfg, store, lambda: _build(cfg.base), train, device)
