"""Dual smoothing ``g_v^*`` (paper 4): certify a classifier whose noise level a median-smoothed selector picks.

For an input ``x`` and a perturbation budget ``D``:

1. **The selector's interval.** ``N_h`` draws ``h(x + eps_m)``, ``eps_m ~ N(0, sigma_m^2 I)``, through the
   engine's ``values`` reduction, give the median ``sigma_0`` and the order-statistic bounds
   ``[lo, hi]`` (:func:`~rsbook.methods.median.median_bounds`): with probability ``>= 1 - 2 alpha_h``
   the median-smoothed selector's output at every ``x'`` with ``||x' - x|| <= D`` lies in ``[lo, hi]``.
   Clipping ``[h_l, h_u]`` is monotone, so it clips the median and both bounds.
2. **The classifier's counts** at each noise level needed, through
   :meth:`~rsbook.core.certify.Smooth.certify_many` (``n0`` selection and ``n`` estimation draws
   per level and image, every level of every image in the same forward batches).
3. **Three answers**, each a :class:`~rsbook.core.certificate.Certificate`:

   * ``sound`` (guarantee ``"input-dependent"``): the class and ``p_A`` bound at ``sigma_0``, and the
     radius of :func:`~rsbook.core.varying.varying_radius`: the Neyman-Pearson worst case over
     every ``sigma'`` in ``[lo, hi]`` and every ``x'`` within the radius, capped at ``D``. By a union
     bound it holds with probability ``>= 1 - alpha - 2 alpha_h``.
   * ``three_sigma`` (``"not a guarantee"``): the paper's rule, Cohen's certificate at ``lo``,
     ``sigma_0`` and ``hi``, the smallest radius (capped at ``D``), abstaining when any of the three
     abstains or they disagree. It checks three points of a continuum: a classifier whose vote
     changes class between them is certified by it and refuted by the worst case
     (:class:`~rsbook.models.synthetic.NormBandClassifier`).
   * ``no_attack`` (``"fixed noise"``): Cohen's certificate at ``sigma_0`` alone: a guarantee for
     the classifier smoothed at that one level, not for ``g_v^*`` (the paper's "no attack on h").

An infinite bound (too few draws for ``D``) without clipping certifies nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.certificate import ABSTAIN, Certificate
from ..core.certify import Smooth
from ..core.engine import Engine, Item
from ..core.noise import Gaussian
from ..core.varying import varying_radius
from .median import median_bounds

__all__ = ["DualSettings", "SelectorInterval", "DualRow", "selector_draws", "selector_interval", "dual_certify"]


@dataclass(frozen=True)
class DualSettings:
    """The sample sizes and error levels of a dual-smoothing certificate (the paper's Experiment A:
    ``N_h = 1,000``, ``alpha_h = 1e-5``, ``n = 1,000``, ``alpha = 1e-3``)."""

    sigma_m: float
    n_h: int = 1000
    alpha_h: float = 1e-5
    n0: int = 100
    n: int = 1000
    alpha: float = 1e-3
    tol: float = 0.01  # the sound radius's grid slack (rsbook.core.varying)

    def __post_init__(self) -> None:
        if not self.sigma_m > 0 or min(self.n_h, self.n0, self.n) < 1 or not (0 < self.alpha < 1 and 0 < self.alpha_h < 0.5):
            raise ValueError(f"need sigma_m > 0, n_h, n0, n >= 1, 0 < alpha < 1 and 0 < alpha_h < 1/2; got {self}")

    @property
    def error(self) -> float:
        """The sound certificate's error budget ``alpha + 2 alpha_h`` (a union bound)."""
        return self.alpha + 2 * self.alpha_h


def selector_draws(selector: nn.Module, images: Sequence[torch.Tensor], generators: Sequence[torch.Generator],
                   n_h: int, sigma_m: float, batch_size: int | None = None) -> list[np.ndarray]:
    """Sorted ``h(x + eps_m)`` (``n_h`` each) per image, through the engine's ``values`` reduction.

    ``selector`` maps ``(B, *shape)`` to ``(B, 1)`` (e.g. :class:`~rsbook.models.selector.FixedInputs`).
    """
    engine = Engine(selector, None, Gaussian(sigma_m), channels_last=False)
    items = [Item(i, x, g) for i, (x, g) in enumerate(zip(images, generators))]
    out = [np.sort(v[0][:, 0].numpy().astype(float)) for _, v in engine.values(items, (n_h,), batch_size, planned=n_h * len(items))]
    return out


@dataclass(frozen=True)
class SelectorInterval:
    """The selector's median ``sigma_0`` and certified range ``[lower, upper]`` within ``D`` (clipped)."""

    D: float
    median: float
    lower: float
    upper: float
    clip: tuple[float, float] | None


def selector_interval(draws: np.ndarray, D: float, sigma_m: float, alpha_h: float,
                      clip: tuple[float, float] | None = None) -> SelectorInterval:
    """Median and median-smoothing bounds of ``draws`` for budget ``D``, then clipped to ``clip``."""
    b = median_bounds(draws, D, Gaussian(sigma_m), alpha_h)
    med, lo, hi = b.median, b.lower, b.upper
    if clip is not None:
        med, lo, hi = (float(np.clip(v, *clip)) for v in (med, lo, hi))
    return SelectorInterval(float(D), float(med), float(lo), float(hi), clip)


@dataclass(frozen=True)
class DualRow:
    """One image at one budget ``D`` and clipping: its interval and the three certificates."""

    key: int
    interval: SelectorInterval
    sound: Certificate
    three_sigma: Certificate
    no_attack: Certificate


def _abstain(noise, p, samples, guarantee, key) -> Certificate:
    return Certificate(ABSTAIN, 0.0, noise, p, samples, 0, guarantee, key)


def dual_certify(
    smooth: Smooth,
    images: Sequence[torch.Tensor],
    draws: Sequence[np.ndarray],
    generator: Callable[[int, int], torch.Generator],
    settings: DualSettings,
    Ds: Sequence[float],
    clips: Sequence[tuple[float, float] | None] = (None,),
    batch_size: int | None = None,
) -> list[DualRow]:
    """The three certificates of every image at every budget ``D`` and clipping (module docstring).

    ``draws[i]`` are image ``i``'s selector outputs (:func:`selector_draws`); ``generator(i, k)`` is
    the classifier's random stream of image ``i`` at its ``k``-th distinct noise level (``k = 0``:
    the first median). All levels of all images go through one :meth:`Smooth.certify_many` run.
    """
    s = settings
    plan: list[dict[float, int]] = []  # per image: noise level -> k
    intervals: list[list[SelectorInterval]] = []
    for i, dr in enumerate(draws):
        ivs = [selector_interval(dr, D, s.sigma_m, s.alpha_h, c) for c in clips for D in Ds]
        levels: dict[float, int] = {}
        for iv in ivs:
            for v in (iv.median, iv.lower, iv.upper):
                if math.isfinite(v) and v > 0 and v not in levels:
                    levels[v] = len(levels)
        plan.append(levels)
        intervals.append(ivs)
    items = [Item((i, v), images[i], generator(i, k), Gaussian(v)) for i, levels in enumerate(plan) for v, k in levels.items()]
    certs = {c.key: c for c in smooth.certify_many(items, s.n0, s.n, s.alpha, batch_size, planned_images=len(items))}
    d = int(images[0].numel())
    rows = []
    for i, ivs in enumerate(intervals):
        per_image = sum(c.samples for (j, _), c in certs.items() if j == i) + s.n_h
        for iv in ivs:
            if not (math.isfinite(iv.median) and iv.median > 0):  # no noise level to certify at: abstain three times
                noise0 = Gaussian(1.0)
                rows.append(DualRow(i, iv, *(_abstain(noise0, 0.0, per_image, g, i)
                                             for g in ("input-dependent", "not a guarantee", "fixed noise"))))
                continue
            med = certs[(i, iv.median)]
            noise0 = Gaussian(iv.median)
            no_attack = med
            if med.abstained or not (math.isfinite(iv.lower) and math.isfinite(iv.upper)) or iv.lower <= 0:
                sound = _abstain(noise0, med.p_lower, per_image, "input-dependent", i)
            else:
                vr = varying_radius(med.p_lower, iv.median, iv.lower, iv.upper, d, r_max=iv.D, tol=s.tol)
                sound = (Certificate(med.prediction, vr.radius, noise0, med.p_lower, per_image, s.n0, "input-dependent", i)
                         if vr.certified else _abstain(noise0, med.p_lower, per_image, "input-dependent", i))
            three = [certs.get((i, v)) for v in (iv.lower, iv.median, iv.upper)]
            if any(c is None or c.abstained for c in three) or len({c.prediction for c in three}) > 1:
                three_sigma = _abstain(noise0, med.p_lower, per_image, "not a guarantee", i)
            else:
                three_sigma = Certificate(med.prediction, min(min(c.radius for c in three), iv.D), noise0,
                                          min(c.p_lower for c in three), per_image, 3 * s.n0, "not a guarantee", i)
            rows.append(DualRow(i, iv, sound, three_sigma, no_attack))
    return rows
