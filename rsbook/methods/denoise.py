"""Denoised smoothing (Salman et al. 2020) and denoisers from a learned score (chapter 1).

A denoiser ``D(y, sigma)`` put in front of a frozen classifier ``f`` turns it into a base
classifier for smoothing: certify ``f(D(x + eps, sigma))``. :class:`Denoised` is that
composition as a *noise-conditioned* model, so the certification engine hands every row its
own noise level (``Engine(..., noise_conditioned=True)``).

Denoisers:

* :class:`TweedieDenoiser`: the one-step denoiser from a score network,
  ``D(y) = y + sigma^2 s(y, sigma)``; with the exact score of the noisy density it is the MMSE
  denoiser ``E[x | y]`` (Tweedie's formula; Gaussian noise only).
* :class:`AnnealingDenoiser`: the multi-step denoiser (the paper's Algorithm 1): gradient
  ascent on ``log p_{sigma_i}(x) - phi(y - x)`` over ``L`` decreasing levels, ``T`` steps each,
  for Gaussian, Laplace or uniform noise (:func:`anneal`).
* a network trained directly (e.g. a DnCNN), which takes ``(y, sigma)``.

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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.noise import Gaussian, Noise
from .step import Batch
from .augment import perturb

__all__ = [
    "geometric_sigmas",
    "tweedie",
    "TweedieDenoiser",
    "Anneal",
    "anneal",
    "data_gradient",
    "project_box",
    "AnnealingDenoiser",
    "Denoised",
    "dsm_loss",
    "DenoisingScoreMatching",
    "DenoiserMSE",
    "DenoiserStability",
    "denoising_psnr",
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


@dataclass(frozen=True)
class Anneal:
    """The multi-step denoiser's schedule (Algorithm 1; the settings are this book's choice).

    For an image smoothed at std ``sigma``, level ``i`` of ``levels`` is
    ``sigma_i = sigma * final ** (i / (levels - 1))`` (geometric from ``sigma`` down to
    ``final * sigma``; one level is ``sigma`` itself), with ``steps`` steps of size
    ``a_i = eta * sigma_i^2`` each. The first step from ``x0 = y`` at ``eta = 1`` is Tweedie's
    denoiser (for Gaussian noise the data term vanishes at ``x = y``).
    """

    levels: int = 3
    steps: int = 1
    final: float = 0.2
    eta: float = 1.0

    def __post_init__(self) -> None:
        if self.levels < 1 or self.steps < 1:
            raise ValueError(f"levels and steps must be >= 1, got {self.levels} and {self.steps}")
        if not (0 < self.final <= 1 and self.eta > 0):
            raise ValueError(f"need 0 < final <= 1 and eta > 0, got final={self.final}, eta={self.eta}")

    @property
    def evaluations(self) -> int:
        """Score-network evaluations per denoised image: ``L x T``."""
        return self.levels * self.steps

    def factors(self) -> list[float]:
        """``sigma_i / sigma`` for ``i = 0 .. L-1``."""
        if self.levels == 1:
            return [1.0]
        return [self.final ** (i / (self.levels - 1)) for i in range(self.levels)]


def data_gradient(noise: str, y: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``-grad_x phi(y - x)`` for the noise's negative log-density ``phi`` (per-row std ``sigma``).

    Gaussian ``phi(u) = ||u||^2 / (2 sigma^2)`` gives ``(y - x) / sigma^2``; Laplace
    ``phi(u) = ||u||_1 / b`` with ``b = sigma / sqrt 2`` gives ``sign(y - x) / b``. Both pull
    ``x`` toward ``y`` (NOTES.md: the paper's Algorithm 1 prints the opposite sign). Uniform
    noise has a flat ``phi`` inside its box: zero here, and :func:`anneal` projects instead.
    """
    s = _per_row(sigma, y)
    if noise == "gaussian":
        return (y - x) / s**2
    if noise == "laplace":
        return torch.sign(y - x) * (math.sqrt(2.0) / s)
    if noise == "uniform":
        return torch.zeros_like(x)
    raise ValueError(f"unknown noise {noise!r}; choose gaussian, laplace or uniform")


def project_box(x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Projection of ``x`` onto the uniform noise's support around ``y``: ``[y - l, y + l]``, ``l = sqrt(3) sigma``."""
    half = math.sqrt(3.0) * _per_row(sigma, y)
    return torch.minimum(torch.maximum(x, y - half), y + half)


def anneal(score: nn.Module, y: torch.Tensor, sigma: torch.Tensor | float, noise: str = "gaussian",
           schedule: Anneal = Anneal(), x0: torch.Tensor | None = None, trace: list | None = None) -> torch.Tensor:
    """Algorithm 1 (simulated annealing), batched over all rows at once.

    ``x <- x + a_i (s(x, sigma_i) - grad_x phi(y - x))`` from ``x0`` (default ``y``, as in the
    paper); for uniform noise the data term is the projection onto the box ``[y - l, y + l]``
    after each step. With ``trace`` (a list), ``x`` after every level is appended to it.
    """
    s = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).expand(y.shape[0])
    x = y if x0 is None else x0
    for f in schedule.factors():
        level = s * f
        a = schedule.eta * _per_row(level, y) ** 2
        for _ in range(schedule.steps):
            x = x + a * (score(x, level) + data_gradient(noise, y, x, s))
            if noise == "uniform":
                x = project_box(x, y, s)
        if trace is not None:
            trace.append(x)
    return x


class AnnealingDenoiser(nn.Module):
    """``D(y, sigma)`` = :func:`anneal` with a score network, one noise type and one schedule."""

    def __init__(self, score: nn.Module, noise: str = "gaussian", schedule: Anneal = Anneal()):
        super().__init__()
        data_gradient(noise, torch.zeros(1), torch.zeros(1), torch.ones(1))  # validate the name now
        self.score, self.noise, self.schedule = score, noise, schedule

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return anneal(self.score, y, sigma, self.noise, self.schedule)


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

    def __init__(self, noise: Noise = Gaussian(0.25)):
        self.noise, self.sigma = noise, float(noise.sigma)

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        y = perturb(batch.x, self.noise, generator)
        out = model(y, torch.full((y.shape[0],), self.sigma, device=y.device))
        return (out - batch.x).flatten(1).pow(2).sum(1).mean(), {}


class DenoiserStability:
    """Training step for a denoiser: ``CE(f(D(x + eps)), argmax f(x))`` with ``f`` frozen (no labels)."""

    def __init__(self, classifier: nn.Module, noise: Noise = Gaussian(0.25)):
        self.classifier = classifier.eval().requires_grad_(False)
        self.noise, self.sigma = noise, float(noise.sigma)

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        with torch.no_grad():
            target = self.classifier(batch.x).argmax(1)
        y = perturb(batch.x, self.noise, generator)
        logits = self.classifier(model(y, torch.full((y.shape[0],), self.sigma, device=y.device)))
        return F.cross_entropy(logits, target), {"agreement": (logits.argmax(1) == target).sum().item() / len(target)}


@torch.no_grad()
def denoising_psnr(denoiser: nn.Module, x: torch.Tensor, noise: Noise, generator: torch.Generator | None = None,
                   batch_size: int = 250) -> float:
    """Mean PSNR (dB, peak 1) of ``D(x + eps, sigma)`` against clean ``x`` (images in [0, 1]):
    ``mean_i 10 log10(1 / MSE_i)``, ``eps`` drawn from ``noise`` (std ``sigma``)."""
    out, sigma = [], noise.sigma
    for chunk in x.split(batch_size):
        y = perturb(chunk, noise, generator)
        d = denoiser(y, torch.full((y.shape[0],), float(sigma), device=y.device))
        mse = (d - chunk).flatten(1).pow(2).mean(1)
        out.append(10 * torch.log10(1.0 / mse))
    return float(torch.cat(out).mean())
