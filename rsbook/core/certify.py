"""Cohen et al.'s smoothed classifier: ``Smooth.predict`` and ``Smooth.certify``.

The smoothed classifier is ``g(x) = argmax_c P(f(x + eps) = c)`` with ``eps`` drawn from a
:class:`~rsbook.core.noise.Noise`. ``certify`` returns a class and a radius such that, with
probability at least ``1 - alpha`` over its own noise draws, ``g`` is constant within that
radius (l2 for Gaussian, l1 for Laplace and uniform) -- or ``ABSTAIN``.

The noise may differ from input to input (``noise=`` on every method, or per
:class:`~rsbook.core.engine.Item`): a certificate is always the one of the noise that input
was smoothed with. Whether a rule that *chooses* the noise per input keeps the guarantee is
the caller's business (see chapter 2 of the book): the bound here holds for the noise given.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sized

import numpy as np
import torch
from scipy.stats import binomtest

from .bounds import clopper_pearson_lower, clopper_pearson_upper
from .certificate import ABSTAIN, Certificate
from .engine import Engine, Item, as_noise
from .noise import Noise
from .sequential import Sequential, SequentialCertificate, certify_sequential

__all__ = [
    "ABSTAIN",
    "Certificate",
    "Smooth",
    "certificate",
    "certificate_given",
    "max_certified_radius",
    "vote",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
]

def certificate(counts0: np.ndarray, counts: np.ndarray, alpha: float, noise: Noise, key: Any = None) -> Certificate:
    """CERTIFY's decision from selection counts ``counts0`` and independent estimation counts.

    ``c_A = argmax counts0``; then :func:`certificate_given` on the estimation counts, with the
    guarantee ``"fixed noise"`` and the selection samples counted.
    """
    c = certificate_given(int(np.argmax(counts0)), counts, alpha, noise, key)
    selection = int(np.sum(counts0))
    return Certificate(c.prediction, c.radius, noise, c.p_lower, c.samples + selection, selection, "fixed noise", key)


def certificate_given(c_a: int, counts: np.ndarray, alpha: float, noise: Noise, key: Any = None) -> Certificate:
    """The certificate for a class ``c_a`` fixed before ``counts`` were drawn (guarantee ``"class given"``).

    ``p_lower = clopper_pearson_lower(counts[c_a], sum(counts), alpha)``; ``ABSTAIN`` with radius 0
    if ``p_lower < 1/2``, else ``c_a`` with ``noise.certified_radius(p_lower)``. Valid with
    probability ``>= 1 - alpha`` as long as ``c_a`` does not depend on these counts.
    """
    n = int(np.sum(counts))
    p_lower = clopper_pearson_lower(int(counts[c_a]), n, alpha)
    if p_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, noise, float(p_lower), n, 0, "class given", key)
    return Certificate(int(c_a), float(noise.certified_radius(p_lower)), noise, float(p_lower), n, 0, "class given", key)


def vote(counts: np.ndarray, alpha: float) -> int:
    """PREDICT's decision from class counts: the top class, or ``ABSTAIN`` if the two-sided binomial
    test of the top count ``c1`` out of ``c1 + c2`` (the two largest counts) at 1/2 has p-value > alpha."""
    top2 = np.argsort(counts)[::-1][:2]
    c1, c2 = int(counts[top2[0]]), int(counts[top2[1]])
    if binomtest(c1, c1 + c2, 0.5).pvalue > alpha:
        return ABSTAIN
    return int(top2[0])


def max_certified_radius(noise: Noise, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with ``n`` estimation samples: the radius of
    ``p_lower = alpha ** (1/n)``, the Clopper-Pearson bound when every sample agrees
    (``3.81 sigma`` for Gaussian noise at ``n = 1e5``, ``alpha = 0.001``)."""
    return float(noise.certified_radius(clopper_pearson_lower(n, n, alpha)))


class Smooth:
    """A smoothed classifier ``g`` around ``base_classifier`` (Cohen et al. 2019).

    Args:
        base_classifier: maps a batch of [0, 1] images ``(B, C, H, W)`` to logits ``(B, K)``;
            normalization belongs inside it. It is evaluated as given (its precision and mode
            are part of the model that is certified); put it in ``eval()`` mode first.
        num_classes: ``K``.
        noise: the default noise: a :class:`~rsbook.core.noise.Noise`, a ``(name, sigma)``
            pair, or a float meaning ``Gaussian(sigma)``; ``None`` if every call names its own.
        precision, compile, channels_last, noise_block, noise_conditioned: how the
            :class:`~rsbook.core.engine.Engine` evaluates the model (``precision`` is part of
            the certified model; ``noise_block`` is part of the random stream; a
            noise-conditioned model is called as ``model(x, sigma)``).

    Counting runs on the :class:`~rsbook.core.engine.Engine`: many inputs share one batch, noise
    is drawn on the model's device from each input's own generator, counts stay on the device.
    """

    def __init__(
        self,
        base_classifier: torch.nn.Module,
        num_classes: int,
        noise: Noise | tuple[str, float] | float | None = None,
        precision: str = "fp32",
        compile: bool | None = None,
        channels_last: bool = True,
        noise_block: int = 400,
        noise_conditioned: bool = False,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if isinstance(noise, str):
            raise TypeError(f"noise must be a Noise, a (name, sigma) pair or a float sigma, got the string {noise!r}")
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.noise = None if noise is None else as_noise(noise, where="Smooth noise")
        self.engine = Engine(base_classifier, self.num_classes, self.noise, precision=precision, channels_last=channels_last,
                             compile=compile, noise_block=noise_block, noise_conditioned=noise_conditioned)

    @property
    def sigma(self) -> float:
        """The default noise's sigma."""
        if self.noise is None:
            raise AttributeError("this Smooth has no default noise; each call names its own")
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

    def resolve_noise(self, noise: Noise | tuple[str, float] | float | None = None) -> Noise:
        """The noise a call with ``noise`` uses: its own, else this Smooth's default."""
        return as_noise(noise, self.noise, where="noise")

    def max_radius(self, n: int, alpha: float, noise: Noise | tuple[str, float] | float | None = None) -> float:
        """:func:`max_certified_radius` for this Smooth's (or the given) noise."""
        return max_certified_radius(self.resolve_noise(noise), n, alpha)

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | None,
        generator: torch.Generator | None = None,
        noise: Noise | tuple[str, float] | float | None = None,
    ) -> tuple[int, float]:
        """Monte Carlo CERTIFY of Cohen et al. (Algorithm 1).

        ``n0`` samples select the class ``c_A`` and are discarded; ``n`` fresh samples count
        ``n_A``; ``p_lower = clopper_pearson_lower(n_A, n, alpha)``. Returns ``(ABSTAIN, 0.0)``
        if ``p_lower < 1/2``, else ``(c_A, noise.certified_radius(p_lower))``. With probability
        ``>= 1 - alpha`` a returned class is ``g``'s prediction everywhere within the radius.
        The radius is capped by :meth:`max_radius` (3.20 sigma for Gaussian noise at
        ``n = 1e4``, ``alpha = 0.001``). ``batch_size=None`` picks one automatically.
        """
        return self.certificate(x, n0, n, alpha, batch_size, generator, noise).pair()

    def certificate(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | None,
        generator: torch.Generator | None = None,
        noise: Noise | tuple[str, float] | float | None = None,
        c_a: int | None = None,
    ) -> Certificate:
        """:meth:`certify` (or, with ``c_a`` given, :meth:`certify_given`) returning the whole
        :class:`~rsbook.core.certificate.Certificate`: the noise, ``p_lower``, the samples and the guarantee."""
        (cert,) = self.certify_many([Item(None, x, generator, noise, c_a=c_a)], n0, n, alpha, batch_size, planned_images=1)
        return cert

    def certify_given(
        self,
        x: torch.Tensor,
        c_a: int,
        n: int,
        alpha: float,
        batch_size: int | None,
        generator: torch.Generator | None = None,
        noise: Noise | tuple[str, float] | float | None = None,
    ) -> tuple[int, float]:
        """CERTIFY with the class given (deterministic certification): the estimation phase only.

        ``c_a`` must be chosen without these noise draws (e.g. the class of a deterministic
        model at the clean input); ``n`` draws count ``n_A`` and the bound is as in
        :meth:`certify`. Returns ``(ABSTAIN, 0.0)`` or ``(c_a, radius)``.
        """
        return self.certificate(x, 1, n, alpha, batch_size, generator, noise, c_a=c_a).pair()

    def certify_many(
        self,
        items: Iterable[Item | tuple[Any, torch.Tensor, torch.Generator | None]],
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | None,
        planned_images: int | None = None,
    ) -> Iterator[Certificate]:
        """CERTIFY for a stream of items; yields one :class:`~rsbook.core.certificate.Certificate` per
        item (its ``key`` the item's), in input order.

        Each item (an :class:`~rsbook.core.engine.Item` or ``(key, x, generator)``) gets its own
        ``n0`` selection and ``n`` estimation draws from its own generator and its own noise
        (default: this Smooth's), exactly as :meth:`certify` would; an item with ``c_a`` set
        skips the selection (as :meth:`certify_given`). Items only share forward batches.
        """
        _check_sampling(n0, "n0")
        _check_sampling(n, "n")

        def prepared():
            for raw in items:
                item = raw if isinstance(raw, Item) else Item(*raw)
                noise = as_noise(item.noise, self.noise, where=f"item {item.key!r}, field 'noise'")
                _check_class(item, self.num_classes)
                sizes = (n0, n) if item.c_a is None else (n,)
                yield Item((item.key, item.c_a, noise), item.x, item.generator, noise, sizes)

        planned = None if planned_images is None else planned_images * (n0 + n)  # lets batch_size=None skip a pointless sweep
        for (key, c_a, noise), counts in self.engine.counts(prepared(), (n0, n), batch_size, planned):
            yield certificate(counts[0], counts[1], alpha, noise, key) if c_a is None else certificate_given(c_a, counts[0], alpha, noise, key)

    def certify_sequential(
        self,
        x: torch.Tensor,
        n0: int,
        n_max: int,
        alpha: float,
        batch_size: int | None,
        seq: Sequential | None = None,
        generator: torch.Generator | None = None,
        noise: Noise | tuple[str, float] | float | None = None,
    ) -> SequentialCertificate:
        """Anytime-valid sequential CERTIFY (:mod:`rsbook.core.sequential`): ``n0`` selection
        samples, then estimation samples in growing chunks until every radius of ``seq.radii``
        is decided (or the radius is known to ``seq.precision``), at most ``n_max``.

        Every "certified at r" holds with probability ``>= 1 - alpha``, jointly over the radii
        and whatever the stopping time. ``seq=None`` decides at Cohen et al.'s table radii.
        """
        (out,) = self.certify_sequential_many([Item(None, x, generator, noise)], n0, n_max, alpha, batch_size, seq)
        return out

    def certify_sequential_many(
        self,
        items: Iterable[Item | tuple[Any, torch.Tensor, torch.Generator | None]],
        n0: int,
        n_max: int,
        alpha: float,
        batch_size: int | None,
        seq: Sequential | None = None,
        window: int = 64,
        ordered: bool = True,
    ) -> Iterator[SequentialCertificate]:
        """:meth:`certify_sequential` for a stream of items (an item with ``c_a`` skips the
        selection); yields one :class:`~rsbook.core.sequential.SequentialCertificate` per item,
        in input order (``ordered=False``: as each finishes). Up to ``window`` items sample together."""
        _check_sampling(n0, "n0")
        _check_sampling(n_max, "n_max")
        return certify_sequential(self.engine, _checked(items, self.num_classes), n0, n_max, alpha, seq or Sequential(),
                                  batch_size, self.noise, window, ordered)

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int | None,
        generator: torch.Generator | None = None,
        noise: Noise | tuple[str, float] | float | None = None,
    ) -> int:
        """Monte Carlo PREDICT of Cohen et al.: the top class, or ``ABSTAIN``.

        With top counts ``c1 >= c2``, abstains if the two-sided binomial test of ``c1`` out of
        ``c1 + c2`` at 1/2 has p-value > alpha. A returned class differs from ``g(x)`` with
        probability at most ``alpha``.
        """
        _check_sampling(n, "n")
        return vote(self.sample_counts(x, n, batch_size, generator, noise), alpha)

    def predict_many(self, items: Iterable[Item | tuple], n: int, alpha: float, batch_size: int | None) -> Iterator[tuple[Any, int]]:
        """:meth:`predict` for a stream of items, batched by the engine: yields ``(key, class or ABSTAIN)``
        in input order, each from ``n`` draws of its own generator and noise."""
        _check_sampling(n, "n")
        planned = n * len(items) if isinstance(items, Sized) else None  # a small known run skips the batch sweep
        for key, counts in self.engine.counts(_checked(items, self.num_classes), (n,), batch_size, planned=planned):
            yield key, vote(counts[0], alpha)

    def sample_counts(
        self,
        x: torch.Tensor,
        num: int,
        batch_size: int | None,
        generator: torch.Generator | None = None,
        noise: Noise | tuple[str, float] | float | None = None,
    ) -> np.ndarray:
        """Class counts of ``f(x + eps)`` over ``num`` noise draws, as an ``int64`` array of length K."""
        _check_sampling(num, "num")
        noise = self.resolve_noise(noise)
        ((_, counts),) = self.engine.counts([Item(None, x, generator, noise)], (num,), batch_size, planned=num)
        return counts[0]


def _check_class(item: Item, num_classes: int) -> None:
    if item.c_a is not None and not (isinstance(item.c_a, (int, np.integer)) and 0 <= item.c_a < num_classes):
        raise ValueError(f"item {item.key!r}, field 'c_a': a class in [0, {num_classes}), got {item.c_a!r}")


def _checked(items, num_classes: int) -> Iterator[Item]:
    for raw in items:
        item = raw if isinstance(raw, Item) else Item(*raw)
        _check_class(item, num_classes)
        yield item


def _check_sampling(n: int, name: str) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
