"""The soft smoothed classifier: a differentiable stand-in for ``g`` in training and attacks.

``G(x)_c = (1/m) sum_k softmax(f(x + eps_k) / tau)_c`` with ``eps_k`` i.i.d. from the noise at
each input's level (Salman et al. 2019, eq. (9) of the HeatSmoothing paper, eq. (5) of the
variational paper). All ``m`` copies of an input share any perturbation applied to the input,
as an attack on the smoothed classifier requires. The noise is reparameterized
(``eps = sigma * unit draw``), so gradients flow to the input *and* to a per-input ``sigma``
(the variational selector is trained through it). As ``tau -> 0`` the average becomes the
majority vote of ``g``; it is never a certificate, only a surrogate.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.noise import Gaussian, Noise, row_levels

__all__ = ["SoftSmoothed", "SoftSmoothedLogits", "FixedNoiseSoft", "noisy_copies"]


Generators = torch.Generator | Sequence[torch.Generator] | None


def noisy_copies(x: torch.Tensor, m: int, noise: Noise, generator: Generators, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
    """``(B*m, ...)``: ``m`` copies of each input plus unit-level draws of ``noise``'s family scaled by
    that input's level (``sigma``: a float or one per input; default ``noise.sigma``).

    Rows ``b*m ... b*m + m - 1`` belong to input ``b``. Differentiable in ``x`` and ``sigma``.
    ``generator`` is one generator for the batch, or one per input (input ``b`` draws its ``m``
    copies from ``generator[b]``, so its noise does not depend on the other inputs of the batch).
    """
    rep = x.repeat_interleave(m, dim=0)
    unit_noise = noise.at(1.0)
    sigma = noise.sigma if sigma is None else sigma
    if isinstance(generator, Sequence):
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]} inputs; give one per input")
        unit = torch.cat([unit_noise.sample((m, *x.shape[1:]), generator=g, device=x.device) for g in generator])
    else:
        unit = unit_noise.sample(rep.shape, generator=generator, device=x.device)
    return rep + unit * row_levels(sigma, x.dim(), repeats=m)


class SoftSmoothed(nn.Module):
    """``G(x) = mean_k softmax(f(x + eps_k) / tau)`` over ``m`` noise draws (see the module docstring).

    Args:
        model: the base classifier ``f`` (logits).
        noise: the noise and its default level; ``forward(x, sigma=...)`` may give one per input.
        m: noise draws per input.
        tau: softmax temperature.

    ``forward`` returns probabilities ``(B, K)``; :meth:`log_prob` their logarithm, for a
    cross-entropy loss (``nll_loss``).
    """

    def __init__(self, model: nn.Module, noise: Noise = Gaussian(0.25), m: int = 16, tau: float = 1.0):
        super().__init__()
        if m < 1 or tau <= 0:
            raise ValueError(f"m must be >= 1 and tau > 0, got m={m}, tau={tau}")
        if not isinstance(noise, Noise):
            raise TypeError(f"noise must be a Noise (e.g. Gaussian(0.25)), got {noise!r}")
        self.model, self.noise, self.m, self.tau = model, noise, int(m), float(tau)
        self.generator: Generators = None  # set it for reproducible draws (one, or one per input of the next batches)

    @property
    def sigma(self) -> float:
        """The default noise level."""
        return self.noise.sigma

    def extra_repr(self) -> str:
        return f"noise={self.noise!r}, m={self.m}, tau={self.tau}"

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        noisy = noisy_copies(x, self.m, self.noise, self.generator, sigma)
        probs = torch.softmax(self.model(noisy) / self.tau, dim=1)
        return probs.view(x.shape[0], self.m, -1).mean(1)

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """``log G(x)``, clamped away from ``log 0``."""
        return self.forward(x, sigma).clamp_min(1e-12).log()


class SoftSmoothedLogits(nn.Module):
    """``log G(x)`` as a logits model, so that attack libraries (foolbox's ``PyTorchModel``, which
    applies softmax / cross-entropy to logits) attack the soft smoothed classifier itself:
    ``softmax(log G) = G``. Every call draws fresh noise; all ``m`` copies share the attack's
    perturbation (eq. (9) of the HeatSmoothing paper)."""

    def __init__(self, soft: SoftSmoothed):
        super().__init__()
        self.soft = soft

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.soft.log_prob(x)


class FixedNoiseSoft(nn.Module):
    """The soft smoothed classifier with ``m`` noise draws fixed per image (common random numbers):
    ``G_i(x) = mean_k softmax(f(x + eps_ik))`` with ``eps_ik`` drawn once from image ``i``'s generator.

    A deterministic function of the input, so a line search on it is well defined (a fresh draw
    per call would make "misclassified" change from call to call). ``forward(points, rows)``
    evaluates ``points[j]`` with image ``rows[j]``'s draws and returns the predicted classes.
    """

    def __init__(self, model: nn.Module, noise: Noise, m: int, generators: Sequence[torch.Generator],
                 shape: tuple[int, ...], device: torch.device | str = "cpu"):
        super().__init__()
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        unit = noise.at(1.0)
        self.model, self.m = model, int(m)
        self.register_buffer("eps", torch.stack([unit.sample((m, *shape), generator=g, device=device) for g in generators]) * noise.sigma)

    def forward(self, points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        noisy = points.repeat_interleave(self.m, dim=0) + self.eps[rows].flatten(0, 1)
        return torch.softmax(self.model(noisy), dim=1).view(len(points), self.m, -1).mean(1).argmax(1)
