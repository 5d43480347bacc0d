"""Median smoothing (Chiang et al. 2020): certified bounds on a smoothed real-valued output.

For a scalar function ``h`` smoothed with a noise ``eps`` (a :class:`~rsbook.core.noise.Noise`),
write ``h_p(x)`` for the ``p``-th percentile of ``h(x + eps)``. For every ``||delta|| <= D`` in the
noise's norm,

    h_{p_l}(x) <= h_{1/2}(x + delta) <= h_{p_u}(x),   p_u = noise.required_p(D),  p_l = 1 - p_u

(the percentile version of the noise's certificate: ``required_p`` is the inverse of its radius,
so a set of probability ``p_u`` at ``x`` keeps probability at least 1/2 at ``x + delta``; for
Gaussian noise ``p_u = Phi(D / sigma)``, ``p_l = Phi(-D / sigma)``, Chiang et al.'s bound). From ``n`` draws sorted as
``X(1) <= ... <= X(n)``, ``X(q)`` is an upper confidence bound on ``h_{p_u}`` when
``P(Binom(n, p_u) <= q - 1) >= 1 - alpha`` -- the order statistic ``X(q)`` lies below the
``p_u`` percentile only if at most ``q - 1`` draws do. The smallest such ``q`` gives the tightest
bound; symmetrically for the lower one. Indices are 1-based; when no index qualifies (too few
draws for this ``D``) the bound is infinite, never an index past the end. (The authors' public
code of Chiang et al. reads one index too far, which is unsound for the lower bound; this is
the sound version.) The samples come from :meth:`rsbook.core.engine.Engine.values`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom

from ..core.noise import Noise

__all__ = ["order_indices", "MedianBounds", "median_bounds"]


def order_indices(n: int, D: float, noise: Noise, alpha: float) -> tuple[int | None, int | None]:
    """1-based order-statistic indices ``(q_l, q_u)`` for radius ``D``, or ``None`` where none qualifies.

    ``q_u`` is the smallest ``q`` with ``BinomCDF(q - 1; n, p_u) >= 1 - alpha`` (so ``X(q_u)`` is
    at least the ``p_u`` percentile with probability >= 1 - alpha); ``q_l`` the largest ``q`` with
    ``BinomCDF(q - 1; n, p_l) <= alpha`` (so ``X(q_l)`` is at most the ``p_l`` percentile).
    """
    if n < 1 or not isinstance(noise, Noise) or not 0 < alpha < 1 or D < 0:
        raise ValueError(f"need n >= 1, a Noise, 0 < alpha < 1, D >= 0; got n={n}, noise={noise!r}, alpha={alpha}, D={D}")
    p_u = float(noise.required_p(D))
    p_l = 1.0 - p_u
    q = np.arange(1, n + 1)
    upper_ok = binom.cdf(q - 1, n, p_u) >= 1 - alpha  # P(#draws below the p_u percentile <= q - 1)
    lower_ok = binom.sf(q - 1, n, p_l) >= 1 - alpha  # P(#draws below the p_l percentile >= q)
    q_u = int(q[upper_ok][0]) if upper_ok.any() else None
    q_l = int(q[lower_ok][-1]) if lower_ok.any() else None
    return q_l, q_u


@dataclass(frozen=True)
class MedianBounds:
    """The empirical median and certified bounds of the smoothed output within radius ``D``."""

    median: float
    lower: float
    upper: float
    q_l: int | None
    q_u: int | None


def median_bounds(samples: torch.Tensor | np.ndarray, D: float, noise: Noise, alpha: float) -> MedianBounds:
    """Median and ``(1 - alpha)``-confidence bounds (each side) on the median smoothed output
    anywhere within radius ``D`` (the noise's norm), from i.i.d. draws ``h(x + eps)``; ``-inf``/``+inf``
    where too few draws."""
    x = np.sort(np.asarray(samples, dtype=float).reshape(-1))
    q_l, q_u = order_indices(len(x), D, noise, alpha)
    return MedianBounds(
        median=float(np.median(x)),
        lower=float(x[q_l - 1]) if q_l is not None else -math.inf,
        upper=float(x[q_u - 1]) if q_u is not None else math.inf,
        q_l=q_l,
        q_u=q_u,
    )
