"""One way to get any stored model: ``trained(cfg, store)``.

Every model of the book is named by its training config and kept in an
:class:`~rsbook.infra.artifacts.ArtifactStore`: loaded when stored, otherwise trained (resumably,
:func:`~rsbook.training.fit.load_or_fit`) and stored first. The config's type says what to train:
a :class:`~rsbook.training.classifier.TrainConfig` (a classifier), a
:class:`~rsbook.training.denoiser.DenoiserConfig` (a denoiser or score network), or a
:class:`~rsbook.training.finetune.HeatConfig` / :class:`~rsbook.training.finetune.AdvConfig` /
:class:`~rsbook.training.samplewise.SampleWiseConfig` (a fine-tuning, whose ``base`` chain is itself obtained with ``trained`` first, from the store that
``store_of`` names for it).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..infra.artifacts import ArtifactStore
from ..infra.data import ImageDataset
from ..models.classifiers import for_inference
from .classifier import TrainConfig, trained_model
from .denoiser import DenoiserConfig, trained_denoiser
from .finetune import AdvConfig, HeatConfig, trained_finetuned
from .samplewise import SampleWiseConfig, trained_samplewise
from .selector import SelectorConfig, trained_selector

__all__ = ["trained"]


def trained(
    cfg: Any,
    store: ArtifactStore,
    device: torch.device | str = "cpu",
    progress: bool = True,
    train_set: ImageDataset | None = None,
    store_of: Callable[[Any], ArtifactStore] | None = None,
) -> nn.Module:
    """The stored model for ``cfg`` (see the module docstring); ``store_of(base_cfg)`` says where a
    fine-tuning's base lives (default: ``store``)."""
    where = store_of or (lambda _: store)
    if isinstance(cfg, TrainConfig):
        return trained_model(cfg, store, device=device, train_set=train_set, progress=progress)
    if isinstance(cfg, DenoiserConfig):
        return trained_denoiser(cfg, store, device=device, train_set=train_set, progress=progress)
    if isinstance(cfg, (HeatConfig, AdvConfig)):
        base = lambda: trained(cfg.base, where(cfg.base), device, progress, train_set, store_of)  # noqa: E731
        return trained_finetuned(cfg, store, base, device, train_set, progress)
    if isinstance(cfg, SelectorConfig):
        base = lambda: for_inference(trained(cfg.base, where(cfg.base), device, progress, train_set, store_of))  # noqa: E731
        return trained_selector(cfg, store, base, device, train_set, progress)
    if isinstance(cfg, SampleWiseConfig):
        base = lambda: for_inference(trained(cfg.base, where(cfg.base), device, progress, train_set, store_of))  # noqa: E731
        return trained_samplewise(cfg, store, base, device, train_set, progress)
    raise TypeError(f"no stored model for a {type(cfg).__name__}; give a TrainConfig, DenoiserConfig, HeatConfig, AdvConfig, "
                    "SelectorConfig or SampleWiseConfig")
