"""What every certifier returns: a :class:`Certificate`, and the guarantee it carries.

A certificate says: with probability at least ``1 - alpha`` over the certifier's own noise
draws, the smoothed classifier ``g`` predicts ``prediction`` everywhere within ``radius`` (in
the noise's norm) of the input -- for the noise the certificate names, under the procedure its
``guarantee`` names. ``ABSTAIN`` certifies nothing (``radius = 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .noise import Noise

__all__ = ["ABSTAIN", "GUARANTEES", "Certificate"]

ABSTAIN = -1

#: The procedures a certificate can come from, and what each one guarantees.
GUARANTEES: dict[str, str] = {
    "fixed noise": "Cohen et al.'s CERTIFY at the noise given: n0 selection samples choose the class, n fresh "
                   "samples bound p_A (Clopper-Pearson); valid with probability >= 1 - alpha",
    "class given": "the class was fixed before any noise sample (e.g. a deterministic model's class at the clean "
                   "input); n samples bound p_A (Clopper-Pearson); valid with probability >= 1 - alpha",
    "sequential": "anytime-valid: a confidence sequence for p_A read after every chunk, so one alpha covers every "
                  "radius decided and every stopping time",
    "input-dependent": "the smoothing noise level may change with the input within a certified interval; p_A is "
                       "bounded once at a fixed sigma_0 and the radius is the Neyman-Pearson worst case over every "
                       "level in the interval (rsbook.core.varying); valid with probability >= 1 - alpha minus the "
                       "interval's own error (alpha + 2 alpha_h for dual smoothing, by a union bound)",
    "not a guarantee": "a published procedure shown for comparison whose radius the theory does not back (e.g. "
                       "variational smoothing's three-sigma rule); never read as a certificate",
}


@dataclass(frozen=True)
class Certificate:
    """One input's certificate (see the module docstring).

    ``p_lower`` is the lower confidence bound on ``p_A`` that the radius is computed from (a
    confidence sequence's running maximum for a sequential certificate); ``samples`` counts every
    forward pass the input used, ``selection`` of them spent choosing the class (0 when it was
    given); ``key`` is the caller's label of the input (``None`` for a single call).
    """

    prediction: int
    radius: float
    noise: Noise
    p_lower: float
    samples: int
    selection: int
    guarantee: str
    key: Any = None

    def __post_init__(self) -> None:
        if self.guarantee not in GUARANTEES:
            raise ValueError(f"guarantee must be one of {sorted(GUARANTEES)}, got {self.guarantee!r}")

    @property
    def norm(self) -> str:
        """The norm the radius is stated in (``l2`` for Gaussian noise, ``l1`` for Laplace and uniform)."""
        return self.noise.norm

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    @property
    def estimation(self) -> int:
        """The samples that bound ``p_A`` (``samples - selection``)."""
        return self.samples - self.selection

    def pair(self) -> tuple[int, float]:
        """Cohen et al.'s ``(class or ABSTAIN, radius)``."""
        return self.prediction, self.radius
