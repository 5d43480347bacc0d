"""Additive noise distributions for randomized smoothing.

One parameterization for every distribution: ``sigma`` is the per-coordinate standard
deviation, in [0, 1]-pixel units (noise is added to un-normalized images).

* Gaussian ``N(0, sigma^2 I)``; certificate in l2 (Cohen et al. 2019):
  ``R = sigma * Phi^-1(p)``.
* Laplace with scale ``b = sigma / sqrt(2)``; certificate in l1 (Teng et al. 2020):
  ``R = b * ln(1 / (2 (1 - p)))``.
* Uniform on ``[-l, l]^d`` with ``l = sqrt(3) * sigma``; certificate in l1 (Yang et al. 2020):
  ``R = 2 l (p - 1/2)``.

Here ``p`` is a lower confidence bound on the smoothed classifier's top-class probability;
every radius is ``<= 0`` for ``p <= 1/2`` (the caller abstains there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.stats import norm

__all__ = ["Noise", "Gaussian", "Laplace", "Uniform", "make_noise", "NOISES", "row_levels"]


def _check_sigma(sigma: float) -> float:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number (the per-coordinate standard deviation, e.g. 0.25), got {sigma!r}")
    return float(sigma)


@dataclass(frozen=True)
class Noise:
    """Base class: a zero-mean product distribution with per-coordinate std ``sigma``."""

    sigma: float
    name: ClassVar[str] = "noise"
    norm: ClassVar[str] = ""  # the l_p norm the certificate is stated in

    def __post_init__(self) -> None:
        _check_sigma(self.sigma)

    def sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw a tensor of i.i.d. noise of the given shape on ``device``."""
        return self.sample_(torch.empty(tuple(shape), device=device, dtype=dtype), generator)

    def sample_(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill ``out`` with i.i.d. noise in place (the same values ``sample`` would return)."""
        raise NotImplementedError

    def certified_radius(self, p_lower: np.ndarray | float) -> np.ndarray | float:
        """Radius (in ``self.norm``) certified by a lower bound ``p_lower`` on p_A."""
        raise NotImplementedError

    def required_p(self, radius: np.ndarray | float) -> np.ndarray | float:
        """The inverse of :meth:`certified_radius`: the ``p`` whose radius is ``radius``
        (a certificate at ``radius`` needs a lower bound strictly above it)."""
        raise NotImplementedError

    def at(self, sigma: float) -> "Noise":
        """The same family at level ``sigma``."""
        return type(self)(sigma)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma:g})"


@dataclass(frozen=True, repr=False)
class Gaussian(Noise):
    """``N(0, sigma^2 I)``; l2 radius ``sigma * Phi^-1(p)``.

    >>> round(float(Gaussian(0.5).certified_radius(norm.cdf(2.0))), 6)
    1.0
    """

    name: ClassVar[str] = "gaussian"
    norm: ClassVar[str] = "l2"

    def sample_(self, out, generator=None):
        # one pass, and bit for bit the values of ``torch.randn(...) * sigma`` (tested)
        return out.normal_(0.0, self.sigma, generator=generator)

    def certified_radius(self, p_lower):
        return self.sigma * norm.ppf(p_lower)

    def required_p(self, radius):
        p = norm.cdf(np.asarray(radius, dtype=float) / self.sigma)
        return p if np.ndim(p) else float(p)


@dataclass(frozen=True, repr=False)
class Laplace(Noise):
    """Laplace with scale ``b = sigma / sqrt(2)``; l1 radius ``b * ln(1 / (2 (1 - p)))``.

    >>> lap = Laplace(2 ** 0.5)  # b = 1
    >>> round(float(lap.certified_radius(1 - 0.5 * math.exp(-1))), 6)
    1.0
    """

    name: ClassVar[str] = "laplace"
    norm: ClassVar[str] = "l1"

    @property
    def scale(self) -> float:
        """The Laplace scale ``b = sigma / sqrt(2)``."""
        return self.sigma / math.sqrt(2.0)

    def sample_(self, out, generator=None):
        # The difference of two i.i.d. Exp(1) variables is standard Laplace (scale 1).
        e = torch.empty((2, *out.shape), device=out.device, dtype=out.dtype).exponential_(generator=generator)
        return torch.sub(e[0], e[1], out=out).mul_(self.scale)

    def certified_radius(self, p_lower):
        p = np.asarray(p_lower, dtype=float)
        with np.errstate(divide="ignore"):
            r = -self.scale * np.log(2.0 * (1.0 - p))
        return r if r.ndim else float(r)

    def required_p(self, radius):
        p = 1.0 - 0.5 * np.exp(-np.asarray(radius, dtype=float) / self.scale)
        return p if p.ndim else float(p)


@dataclass(frozen=True, repr=False)
class Uniform(Noise):
    """Uniform on ``[-l, l]^d`` with ``l = sqrt(3) sigma``; l1 radius ``2 l (p - 1/2)``.

    >>> round(float(Uniform(1 / 3 ** 0.5).certified_radius(0.75)), 6)
    0.5
    """

    name: ClassVar[str] = "uniform"
    norm: ClassVar[str] = "l1"

    @property
    def half_width(self) -> float:
        """The half-width ``l = sqrt(3) * sigma`` of the support."""
        return math.sqrt(3.0) * self.sigma

    def sample_(self, out, generator=None):
        return out.uniform_(-self.half_width, self.half_width, generator=generator)

    def certified_radius(self, p_lower):
        p = np.asarray(p_lower, dtype=float)
        r = 2.0 * self.half_width * (p - 0.5)
        return r if r.ndim else float(r)

    def required_p(self, radius):
        p = 0.5 + np.asarray(radius, dtype=float) / (2.0 * self.half_width)
        return p if p.ndim else float(p)


NOISES: dict[str, type[Noise]] = {cls.name: cls for cls in (Gaussian, Laplace, Uniform)}


def make_noise(name: str, sigma: float) -> Noise:
    """Build a noise by name (``gaussian``, ``laplace`` or ``uniform``)."""
    cls = NOISES.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown noise {name!r}; choose one of {sorted(NOISES)}")
    return cls(sigma)


def row_levels(sigma: torch.Tensor | float, ndim: int, repeats: int = 1) -> torch.Tensor | float:
    """``sigma`` shaped to scale a batch of ``ndim`` dimensions row by row: a float stays a float; a
    ``(B,)`` tensor (one level per input) becomes ``(B * repeats, 1, ..., 1)``, input ``b``'s level on
    its ``repeats`` consecutive rows. The one place per-row noise levels are laid out (reparameterized
    draws ``unit * sigma`` stay differentiable in ``sigma``)."""
    if isinstance(sigma, torch.Tensor) and sigma.dim() > 0:
        s = sigma.reshape(-1)
        return (s.repeat_interleave(repeats) if repeats > 1 else s).view(-1, *([1] * (ndim - 1)))
    return sigma
