"""Cohen et al.'s smoothed classifier: ``Smooth.predict`` and ``Smooth.certify``.

The smoothed classifier is ``g(x) = argmax_c P(f(x + eps) = c)`` with ``eps`` drawn from a
:class:`~rsbook.noise.Noise`. ``certify`` returns a class and a radius such that, with
probability at least ``1 - alpha`` over its own noise draws, ``g`` is constant within that
radius (l2 for Gaussian, l1 for Laplace and uniform) -- or ``ABSTAIN``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import torch
from scipy.stats import beta, binomtest

from .engine import Engine
from .noise import Gaussian, Noise

__all__ = ["ABSTAIN", "Smooth", "certificate", "clopper_pearson_lower", "clopper_pearson_upper"]

ABSTAIN = -1


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


def certificate(counts0: np.ndarray, counts: np.ndarray, alpha: float, noise: Noise) -> tuple[int, float]:
    """CERTIFY's decision from selection counts ``counts0`` and independent estimation counts.

    ``c_A = argmax counts0``; ``p_lower = clopper_pearson_lower(counts[c_A], sum(counts), alpha)``;
    ``(ABSTAIN, 0.0)`` if ``p_lower < 1/2``, else ``(c_A, noise.certified_radius(p_lower))``.
    """
    c_a = int(np.argmax(counts0))
    p_lower = clopper_pearson_lower(int(counts[c_a]), int(np.sum(counts)), alpha)
    if p_lower < 0.5:
        return ABSTAIN, 0.0
    return c_a, float(noise.certified_radius(p_lower))


class Smooth:
    """A smoothed classifier ``g`` around ``base_classifier`` (Cohen et al. 2019).

    Args:
        base_classifier: maps a batch of [0, 1] images ``(B, C, H, W)`` to logits ``(B, K)``;
            normalization belongs inside it. It is evaluated as given (its precision and mode
            are part of the model that is certified); put it in ``eval()`` mode first.
        num_classes: ``K``.
        noise: a :class:`~rsbook.noise.Noise`, or a float meaning ``Gaussian(sigma)``.
        precision, compile, channels_last, noise_block: how the
            :class:`~rsbook.engine.Engine` evaluates the model (``precision`` is part of the
            certified model; the others change only speed, and ``noise_block`` the random
            stream).

    Counting runs on the :class:`~rsbook.engine.Engine`: many images share one batch, noise is
    drawn on the model's device from each image's own generator, counts stay on the device.
    """

    def __init__(
        self,
        base_classifier: torch.nn.Module,
        num_classes: int,
        noise: Noise | float,
        precision: str = "fp32",
        compile: bool | None = None,
        channels_last: bool = True,
        noise_block: int = 400,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.noise = Gaussian(noise) if isinstance(noise, (int, float)) else noise
        if not isinstance(self.noise, Noise):
            raise TypeError(f"noise must be a Noise or a float sigma, got {type(noise).__name__}")
        self.engine = Engine(base_classifier, self.num_classes, self.noise, precision=precision,
                             channels_last=channels_last, compile=compile, noise_block=noise_block)

    @property
    def sigma(self) -> float:
        return self.noise.sigma

    @property
    def precision(self) -> str:
        return self.engine.precision

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def __repr__(self) -> str:
        return (f"Smooth({type(self.base_classifier).__name__}, num_classes={self.num_classes}, "
                f"noise={self.noise!r}, precision={self.precision})")

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | None,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """Monte Carlo CERTIFY of Cohen et al. (Algorithm 1).

        ``n0`` samples select the class ``c_A`` and are discarded; ``n`` fresh samples count
        ``n_A``; ``p_lower = clopper_pearson_lower(n_A, n, alpha)``. Returns ``(ABSTAIN, 0.0)``
        if ``p_lower < 1/2``, else ``(c_A, noise.certified_radius(p_lower))``. With probability
        ``>= 1 - alpha`` a returned class is ``g``'s prediction everywhere within the radius.
        Since ``p_lower <= alpha ** (1/n)``, the radius is capped (3.20 sigma for Gaussian noise
        at ``n = 1e4``, ``alpha = 0.001``). ``batch_size=None`` picks one automatically.
        """
        ((_, pred, radius),) = self.certify_many([(None, x, generator)], n0, n, alpha, batch_size)
        return pred, radius

    def certify_many(
        self,
        items: Iterable[tuple[Any, torch.Tensor, torch.Generator | None]],
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | None,
        planned_images: int | None = None,
    ) -> Iterator[tuple[Any, int, float]]:
        """CERTIFY for a stream of ``(key, x, generator)``; yields ``(key, class, radius)`` in order.

        Each image gets its own ``n0`` selection and ``n`` estimation draws from its own
        generator, exactly as :meth:`certify` would; the images only share forward batches.
        """
        _check_sampling(n0, "n0")
        _check_sampling(n, "n")
        planned = None if planned_images is None else planned_images * (n0 + n)
        for key, counts in self.engine.counts(items, (n0, n), batch_size, planned):
            pred, radius = certificate(counts[0], counts[1], alpha, self.noise)
            yield key, pred, radius

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int | None,
        generator: torch.Generator | None = None,
    ) -> int:
        """Monte Carlo PREDICT of Cohen et al.: the top class, or ``ABSTAIN``.

        With top counts ``c1 >= c2``, abstains if the two-sided binomial test of ``c1`` out of
        ``c1 + c2`` at 1/2 has p-value > alpha. A returned class differs from ``g(x)`` with
        probability at most ``alpha``.
        """
        _check_sampling(n, "n")
        counts = self.sample_counts(x, n, batch_size, generator)
        top2 = counts.argsort()[::-1][:2]
        c1, c2 = int(counts[top2[0]]), int(counts[top2[1]])
        if binomtest(c1, c1 + c2, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2[0])

    def sample_counts(
        self,
        x: torch.Tensor,
        num: int,
        batch_size: int | None,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Class counts of ``f(x + eps)`` over ``num`` noise draws, as an ``int64`` array of length K."""
        _check_sampling(num, "num")
        ((_, counts),) = self.engine.counts([(None, x, generator)], (num,), batch_size, planned=num)
        return counts[0]


def _check_sampling(n: int, name: str) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
