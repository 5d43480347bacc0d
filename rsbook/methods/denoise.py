"""Denoised smoothing (Salman et al. 2020) and denoisers from a learned score (chapter 1).

A denoiser ``D(y, sigma)`` put in front of a frozen classifier ``f`` turns it into a base
classifier for smoothing: certify ``f(D(x + eps, sigma))``. :class:`Denoised` is that
composition as a *noise-conditioned* model, so the certification engine hands every row its
own noise level (``Engine(..., noise_conditioned=True)``).

Denoisers:

* :class:`TweedieDenoiser`: the one-step denoiser from a score network,
  ``D(y) = y + sigma^2 s(y, sigma)``; with the exact score of the noisy density it is the MMSE
  denoiser ``E[x | y]`` (Tweedie's formula; Gaussian noise only).
* a network trained directly (e.g. a DnCNN), wrapped so that it takes ``(y, sigma)``.

Training steps for :func:`rsbook.training.fit.fit`:

* :class:`DenoisingScoreMatching`: multi-scale denoising score matching (Song and Ermon 2019):
  each image gets a random level ``sigma_i`` from a geometric grid and the loss
  ``1/2 || sigma_i s(x + sigma_i z, sigma_i) + z ||^2`` (the ``sigma^2``-weighted objective).
* :class:`DenoiserMSE`: ``|| D(x + eps) - x ||^2`` (Salman et al.'s MSE objective).
* :class:`DenoiserStability`: ``CE(f(D(x + eps)), argmax f(x))`` through a frozen classifier
  (Salman et al.'s stability objective).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..training.fit import Batch
from .augment import perturb

__all__ = [
    "geometric_sigmas",
    "tweedie",
    "TweedieDenoiser",
    "Denoised",
    "dsm_loss",
    "DenoisingScoreMatching",
    "DenoiserMSE",
    "DenoiserStability",
]


def geometric_sigmas(sigma_max: float = 1.0, sigma_min: float = 0.01, levels: int = 10) -> torch.Tensor:
    """``levels`` noise levels from ``sigma_max`` down to ``sigma_min``, equally spaced in log."""
    if not (sigma_max > sigma_min > 0) or levels < 2:
        raise ValueError(f"need sigma_max > sigma_min > 0 and levels >= 2, got {sigma_max}, {sigma_min}, {levels}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), levels)


def _per_row(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return s.expand(like.shape[0]).reshape(-1, *([1] * (like.dim() - 1)))


def tweedie(score: nn.Module, y: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Tweedie's one-step denoiser ``y + sigma^2 s(y, sigma)`` (``sigma`` a float or one per row)."""
    s = _per_row(sigma, y)
    return y + s**2 * score(y, s.reshape(-1))


class TweedieDenoiser(nn.Module):
    """``D(y, sigma) = y + sigma^2 s(y, sigma)`` around a score network ``s(y, sigma)``."""

    def __init__(self, score: nn.Module):
        super().__init__()
        self.score = score

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return tweedie(self.score, y, sigma)


class Denoised(nn.Module):
    """``f(D(y, sigma))``: a frozen classifier behind a denoiser, as a noise-conditioned model."""

    def __init__(self, denoiser: nn.Module, classifier: nn.Module):
        super().__init__()
        self.denoiser, self.classifier = denoiser, classifier

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.denoiser(y, sigma))


def dsm_loss(score: nn.Module, x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image ``1/2 || sigma s(x + sigma z, sigma) + z ||^2`` (``sigma``: one level per image).

    Its expectation is minimized by the score of the noisy density; for data ``N(mu, tau^2 I)``
    in ``d`` dimensions the minimum is ``d tau^2 / (2 (tau^2 + sigma^2))``.
    """
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    s = _per_row(sigma, x)
    out = score(x + s * z, s.reshape(-1))
    return 0.5 * (s * out + z).flatten(1).pow(2).sum(1)


class DenoisingScoreMatching:
    """Training step for a score network ``s(y, sigma)``: multi-scale DSM over ``sigmas``.

    Each image draws its level uniformly from ``sigmas`` (Song and Ermon 2019; a geometric grid
    from 1 down to 0.01 in the book). Labels are not used.
    """

    def __init__(self, sigmas: torch.Tensor | tuple[float, ...] = tuple(geometric_sigmas().tolist())):
        self.sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
        if self.sigmas.dim() != 1 or not bool((self.sigmas > 0).all()):
            raise ValueError("sigmas must be a 1-D sequence of positive levels")

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        idx = torch.randint(len(self.sigmas), (batch.x.shape[0],), generator=generator, device=generator.device)
        sigma = self.sigmas.to(batch.x.device)[idx.to(batch.x.device)]
        loss = dsm_loss(model, batch.x, sigma, generator).mean()
        return loss, {}


class DenoiserMSE:
    """Training step for a denoiser ``D(y, sigma)``: ``mean || D(x + eps, sigma) - x ||^2`` per image."""

    def __init__(self, noise: str = "gaussian", sigma: float = 0.25):
        self.noise, self.sigma = noise, float(sigma)

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        y = perturb(batch.x, self.noise, self.sigma, generator)
        out = model(y, torch.full((y.shape[0],), self.sigma, device=y.device))
        return (out - batch.x).flatten(1).pow(2).sum(1).mean(), {}


class DenoiserStability:
    """Training step for a denoiser: ``CE(f(D(x + eps)), argmax f(x))`` with ``f`` frozen (no labels)."""

    def __init__(self, classifier: nn.Module, noise: str = "gaussian", sigma: float = 0.25):
        self.classifier = classifier.eval().requires_grad_(False)
        self.noise, self.sigma = noise, float(sigma)

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        with torch.no_grad():
            target = self.classifier(batch.x).argmax(1)
        y = perturb(batch.x, self.noise, self.sigma, generator)
        logits = self.classifier(model(y, torch.full((y.shape[0],), self.sigma, device=y.device)))
        return F.cross_entropy(logits, target), {"agreement": (logits.argmax(1) == target).sum().item() / len(target)}
