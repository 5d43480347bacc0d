"""Cohen et al.'s smoothed classifier: ``Smooth.predict`` and ``Smooth.certify``.

The smoothed classifier is ``g(x) = argmax_c P(f(x + eps) = c)`` with ``eps`` drawn from a
:class:`~rsbook.noise.Noise`. ``certify`` returns a class and a radius such that, with
probability at least ``1 - alpha`` over its own noise draws, ``g`` is constant within that
radius (l2 for Gaussian, l1 for Laplace and uniform) -- or ``ABSTAIN``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import beta, binomtest

from .noise import Gaussian, Noise

__all__ = ["ABSTAIN", "Smooth", "clopper_pearson_lower", "clopper_pearson_upper"]

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


class Smooth:
    """A smoothed classifier ``g`` around ``base_classifier`` (Cohen et al. 2019).

    Args:
        base_classifier: maps a batch of [0, 1] images ``(B, C, H, W)`` to logits ``(B, K)``;
            normalization belongs inside it. It is evaluated as given (its precision and mode
            are part of the model that is certified); put it in ``eval()`` mode first.
        num_classes: ``K``.
        noise: a :class:`~rsbook.noise.Noise`, or a float meaning ``Gaussian(sigma)``.
    """

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, noise: Noise | float):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.noise = Gaussian(noise) if isinstance(noise, (int, float)) else noise
        if not isinstance(self.noise, Noise):
            raise TypeError(f"noise must be a Noise or a float sigma, got {type(noise).__name__}")

    @property
    def sigma(self) -> float:
        return self.noise.sigma

    @property
    def device(self) -> torch.device:
        try:
            return next(self.base_classifier.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def __repr__(self) -> str:
        return f"Smooth({type(self.base_classifier).__name__}, num_classes={self.num_classes}, noise={self.noise!r})"

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """Monte Carlo CERTIFY of Cohen et al. (Algorithm 1).

        ``n0`` samples select the class ``c_A`` and are discarded; ``n`` fresh samples count
        ``n_A``; ``p_lower = clopper_pearson_lower(n_A, n, alpha)``. Returns ``(ABSTAIN, 0.0)``
        if ``p_lower < 1/2``, else ``(c_A, noise.certified_radius(p_lower))``. With probability
        ``>= 1 - alpha`` a returned class is ``g``'s prediction everywhere within the radius.
        Since ``p_lower <= alpha ** (1/n)``, the radius is capped (3.20 sigma for Gaussian noise
        at ``n = 1e4``, ``alpha = 0.001``).
        """
        _check_sampling(n0, "n0")
        _check_sampling(n, "n")
        counts0 = self.sample_counts(x, n0, batch_size, generator)
        c_a = int(counts0.argmax())
        counts = self.sample_counts(x, n, batch_size, generator)
        p_lower = clopper_pearson_lower(int(counts[c_a]), n, alpha)
        if p_lower < 0.5:
            return ABSTAIN, 0.0
        return c_a, float(self.noise.certified_radius(p_lower))

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
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
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Class counts of ``f(x + eps)`` over ``num`` noise draws, as an ``int64`` array of length K.

        Noise is drawn on the model's device in batches of ``batch_size``; counts stay on
        the device and are transferred once.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = self.device
        x = x.to(device)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=device)
        with torch.inference_mode():
            remaining = num
            while remaining > 0:
                b = min(batch_size, remaining)
                batch = x.expand(b, *x.shape[1:])
                eps = self.noise.sample(batch.shape, generator=generator, device=device, dtype=x.dtype)
                pred = self.base_classifier(batch + eps).argmax(1)
                counts += torch.bincount(pred, minlength=self.num_classes)
                remaining -= b
        return counts.cpu().numpy()


def _check_sampling(n: int, name: str) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
