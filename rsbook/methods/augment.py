"""Noise-augmented training of a base classifier (Cohen et al. 2019 and its variants).

Cross-entropy on ``x + eps`` with fresh noise every batch. How each image's noise level is
chosen is a :class:`SigmaRule`:

* :class:`FixedSigma`: one sigma for every image (Cohen et al.);
* :class:`UniformSigma`: ``sigma_i ~ U(0, sigma_max)`` per image (paper 4's *universal*
  sigma_a training with ``sigma'_a = sigma_max``);
* :class:`GridSigma`: ``sigma_i`` uniform over a finite grid per image (paper 2's
  pretraining, as reconstructed in chapter 2);
* :class:`PerSampleSigma`: a fixed sigma per training image, looked up by its position in
  the training set (paper 2's fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.noise import Noise, row_levels
from .step import Batch

__all__ = ["SigmaRule", "FixedSigma", "UniformSigma", "GridSigma", "PerSampleSigma", "perturb", "NoiseAugmentedCE"]


class SigmaRule:
    """Chooses the per-image noise levels of a batch: ``sigmas(batch, generator) -> (B,)`` tensor, or a float."""

    def sigmas(self, batch: Batch, generator: torch.Generator) -> torch.Tensor | float:
        raise NotImplementedError


@dataclass(frozen=True)
class FixedSigma(SigmaRule):
    sigma: float

    def sigmas(self, batch, generator):
        return self.sigma


@dataclass(frozen=True)
class UniformSigma(SigmaRule):
    """``sigma_i ~ U(0, sigma_max)`` independently per image."""

    sigma_max: float

    def sigmas(self, batch, generator):
        return torch.rand(batch.x.shape[0], generator=generator, device=batch.x.device) * self.sigma_max


@dataclass(frozen=True)
class GridSigma(SigmaRule):
    """``sigma_i`` drawn uniformly from ``grid`` independently per image."""

    grid: tuple[float, ...]

    def sigmas(self, batch, generator):
        grid = torch.tensor(self.grid, dtype=torch.float32, device=batch.x.device)
        return grid[torch.randint(len(self.grid), (batch.x.shape[0],), generator=generator, device=batch.x.device)]


class PerSampleSigma(SigmaRule):
    """A fixed ``sigma`` per training image: ``table[batch.index]``."""

    def __init__(self, table: torch.Tensor):
        if table.dim() != 1 or not bool((table >= 0).all()):
            raise ValueError("the per-sample sigma table must be a 1-D tensor of non-negative levels, one per training image")
        self.table = table.float()

    def sigmas(self, batch, generator):
        return self.table.to(batch.x.device)[batch.index.to(batch.x.device)]


def perturb(x: torch.Tensor, noise: Noise, generator: torch.Generator | None, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
    """``x + eps`` with ``eps`` from ``noise``, or from its family at level ``sigma`` (a float, or one
    level per image).

    A single level draws the noise directly (bit for bit Cohen et al.'s ``randn * sigma``); per-
    image levels scale unit-level draws (:func:`~rsbook.core.noise.row_levels`). ``sigma = 0`` returns ``x``.
    """
    if sigma is None:
        return x + noise.sample(x.shape, generator=generator, device=x.device)
    if isinstance(sigma, (int, float)):
        if sigma == 0:
            return x
        return x + noise.at(sigma).sample(x.shape, generator=generator, device=x.device)
    unit = noise.at(1.0).sample(x.shape, generator=generator, device=x.device)
    return x + unit * row_levels(sigma, x.dim())


class NoiseAugmentedCE:
    """Training step: cross-entropy of ``model(x + eps)``, ``eps`` at the rule's levels.

    Metrics: ``noisy_train_acc`` (accuracy on the noisy batch).
    """

    def __init__(self, noise: Noise, rule: SigmaRule):
        if not isinstance(noise, Noise):
            raise TypeError(f"noise must be a Noise (its family is used, at the rule's levels), got {noise!r}")
        self.noise, self.rule = noise, rule

    def __repr__(self) -> str:
        return f"NoiseAugmentedCE({self.noise.name!r}, {self.rule!r})"

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        sigma = self.rule.sigmas(batch, generator)
        logits = model(perturb(batch.x, self.noise, generator, sigma))
        loss = F.cross_entropy(logits, batch.y)
        return loss, {"noisy_train_acc": (logits.argmax(1) == batch.y).sum().item() / len(batch.y)}
