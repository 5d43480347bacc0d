"""Noise-level selectors of variational smoothing (paper 4) as stored artifacts.

A :class:`SelectorConfig` names a selector: the frozen base classifier it serves (``base``, a
:class:`~rsbook.training.classifier.TrainConfig`), its conditioning level ``sigma_a``, the KL
target ``sigma_t``, mono (``n_h = 0``) or dual smoothing (the median of ``n_h`` draws at
``sigma_m``), and the optimization. The loss and the universal ``lam ~ U(0, 1)`` per batch are
:class:`~rsbook.methods.variational.SelectorStep`'s; the architecture is
:class:`~rsbook.models.selector.NoiseSelector`. Adam at a cosine rate is the book's choice (the
paper gives no optimizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..infra.artifacts import ArtifactStore
from ..infra.data import ImageDataset, load_train_subset
from ..methods.variational import SelectorStep
from ..models.selector import NoiseSelector
from .classifier import TrainConfig
from .fit import FitConfig, fit, load_or_fit

__all__ = ["SelectorConfig", "train_selector", "trained_selector"]


@dataclass(frozen=True)
class SelectorConfig:
    """Everything that determines a trained selector (its hash names the artifact).

    ``lam=None`` is universal lambda training (``lam ~ U(0, 1)`` per batch, an input of ``h``).
    """

    base: TrainConfig
    sigma_a: float
    sigma_t: float
    n_h: int = 0  # 0: mono smoothing g_v; > 0: dual smoothing g_v^* (median of n_h draws)
    sigma_m: float = 0.25
    n_f: int = 10
    tau: float = 1.0
    lam: float | None = None
    kl: str = "total"  # eq. (6) as printed; "per-dimension": divided by d (rsbook.methods.variational)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    train_subset: int = 0
    max_batches: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.base, TrainConfig):
            raise TypeError(f"base must be the classifier's TrainConfig, got {type(self.base).__name__}")
        self.step_for(torch.nn.Identity())  # checks sigma_a, sigma_t, lam, n_h
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")

    @property
    def dual(self) -> bool:
        return self.n_h > 0

    def step_for(self, classifier: torch.nn.Module) -> SelectorStep:
        """The training step for this selector around the frozen ``classifier``."""
        return SelectorStep(classifier, self.sigma_a, self.sigma_t, n_f=self.n_f, tau=self.tau, lam=self.lam,
                            n_h=self.n_h, sigma_m=self.sigma_m, kl=self.kl)

    @property
    def fit_config(self) -> FitConfig:
        return FitConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer="adam", weight_decay=0.0,
                         schedule="cosine", augment=self.base.augment and self.base.dataset == "cifar10", seed=self.seed,
                         max_batches=self.max_batches)

    def build(self) -> NoiseSelector:
        channels = 1 if self.base.dataset == "mnist" else 3
        torch.manual_seed(self.seed)  # only for weight initialisation, which has no generator argument
        return NoiseSelector(channels, init_sigma=self.sigma_a if self.sigma_a > 0 else self.sigma_t / 2)


def train_selector(cfg: SelectorConfig, classifier: torch.nn.Module, train_set: ImageDataset | None = None,
                   work_dir: str | Path | None = None, device: torch.device | str = "cpu",
                   progress: bool = True) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Fit a selector for ``cfg`` around ``classifier`` (frozen); returns ``(selector, history)``."""
    if train_set is None:
        train_set = load_train_subset(cfg.base.dataset, cfg.train_subset)
    elif cfg.train_subset:
        train_set = train_set.subset(torch.arange(min(cfg.train_subset, len(train_set))))
    kind = f"dual n_h={cfg.n_h}" if cfg.dual else "mono"
    return fit(cfg.build(), cfg.step_for(classifier.to(device)), cfg.fit_config, work_dir, data=train_set, device=device,
               progress=progress, channels_last=False, desc=f"selector sigma_a={cfg.sigma_a:g} {kind}")


def trained_selector(cfg: SelectorConfig, store: ArtifactStore, classifier: Callable[[], torch.nn.Module],
                     device: torch.device | str = "cpu", train_set: ImageDataset | None = None,
                     progress: bool = True) -> torch.nn.Module:
    """The selector for ``cfg`` from ``store``; trains it around ``classifier()`` (loaded only then) first if absent."""
    return load_or_fit(cfg, store, cfg.build, lambda work: train_selector(cfg, classifier(), train_set, work, device, progress),
                       device)
