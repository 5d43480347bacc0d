"""Published numbers that the book shows beside its own (never used as ours).

Each entry names its source. Values are certified accuracies (fractions) keyed by radius.
"""

from __future__ import annotations

__all__ = ["COHEN_CIFAR10", "COHEN_SOURCE", "cohen_max_radius"]

COHEN_SOURCE = "Cohen, Rosenfeld & Kolter (2019), CIFAR-10, ResNet-110, N=100,000, alpha=0.001, 500 test images"

#: Cohen et al. (2019) CIFAR-10 certified accuracy at r = 0, .25, .5, .75, 1.0, 1.5 per sigma.
COHEN_CIFAR10: dict[float, dict[float, float]] = {
    0.12: {0.0: 0.81, 0.25: 0.59, 0.5: 0.0, 0.75: 0.0, 1.0: 0.0, 1.5: 0.0},
    0.25: {0.0: 0.75, 0.25: 0.60, 0.5: 0.43, 0.75: 0.27, 1.0: 0.0, 1.5: 0.0},
    0.50: {0.0: 0.65, 0.25: 0.55, 0.5: 0.41, 0.75: 0.32, 1.0: 0.23, 1.5: 0.09},
    1.00: {0.0: 0.47, 0.25: 0.39, 0.5: 0.34, 0.75: 0.28, 1.0: 0.22, 1.5: 0.14},
}


def cohen_max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest Gaussian radius CERTIFY can return: ``sigma * Phi^-1(alpha ** (1/n))``."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(alpha ** (1.0 / n)))
