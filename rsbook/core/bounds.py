"""Confidence bounds on a binomial proportion, the statistics behind every certificate."""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

__all__ = ["clopper_pearson_lower", "clopper_pearson_upper"]


def _check_counts(n_a, n, alpha) -> tuple[np.ndarray, np.ndarray]:
    n_a = np.asarray(n_a)
    n = np.asarray(n)
    if np.any(n < 1):
        raise ValueError(f"n must be >= 1, got {n}")
    if np.any(n_a < 0) or np.any(n_a > n):
        raise ValueError(f"n_a must lie in [0, n], got n_a={n_a}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return n_a, n


def clopper_pearson_lower(n_a, n, alpha: float):
    """One-sided exact ``(1 - alpha)`` lower confidence bound on a binomial proportion.

    ``p_lower = Beta.ppf(alpha; n_a, n - n_a + 1)``, and 0 when ``n_a = 0``; for ``n_a = n``
    this is ``alpha ** (1 / n)``. ``P(p_lower <= p) >= 1 - alpha`` for every true ``p``.

    >>> round(clopper_pearson_lower(100, 100, 0.001), 6) == round(0.001 ** (1 / 100), 6)
    True
    """
    n_a, n = _check_counts(n_a, n, alpha)
    with np.errstate(invalid="ignore"):
        p = np.where(n_a > 0, beta.ppf(alpha, np.maximum(n_a, 1), n - n_a + 1), 0.0)
    return float(p) if p.ndim == 0 else p


def clopper_pearson_upper(n_a, n, alpha: float):
    """One-sided exact ``(1 - alpha)`` upper bound: ``Beta.ppf(1 - alpha; n_a + 1, n - n_a)``, 1 if ``n_a = n``."""
    n_a, n = _check_counts(n_a, n, alpha)
    with np.errstate(invalid="ignore"):
        p = np.where(n_a < n, beta.ppf(1 - alpha, n_a + 1, np.maximum(n - n_a, 1)), 1.0)
    return float(p) if p.ndim == 0 else p
