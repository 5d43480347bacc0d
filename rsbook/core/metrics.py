"""Summaries of certification logs: certified accuracy, ACR, abstain rate, envelopes."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .certificate import ABSTAIN

__all__ = ["certified_accuracy", "certified_at", "acr", "abstain_rate", "clean_accuracy", "envelope", "summary"]


def certified_accuracy(log: pd.DataFrame, radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """``mean(correct and radius >= r)`` for each ``r``: the fraction of images certified correct at ``r``."""
    correct = log["correct"].to_numpy().astype(bool)
    radius = log["radius"].to_numpy()
    return np.array([np.mean(correct & (radius >= r)) for r in np.asarray(radii, dtype=float)])


def certified_at(log: pd.DataFrame, radius: float) -> np.ndarray:
    """Per image, in the order of ``idx``: 1 where the certificate is correct with radius ``>= radius``, else 0
    (the paired outcomes that a comparison of two methods on the same images tests)."""
    log = log.sort_values("idx")
    return ((log["correct"].to_numpy() == 1) & (log["radius"].to_numpy() >= radius)).astype(int)


def acr(log: pd.DataFrame) -> float:
    """Average certified radius, ``mean(radius * correct)`` (0 for wrong or abstained images)."""
    return float(np.mean(log["radius"].to_numpy() * log["correct"].to_numpy()))


def abstain_rate(log: pd.DataFrame) -> float:
    return float(np.mean(log["predict"].to_numpy() == ABSTAIN))


def clean_accuracy(log: pd.DataFrame) -> float:
    """Certified accuracy at radius 0 (correct and not abstained)."""
    return float(np.mean(log["correct"].to_numpy().astype(bool)))


def envelope(logs: Mapping[str, pd.DataFrame], radii: Sequence[float]) -> pd.DataFrame:
    """At each radius, the best certified accuracy over ``logs`` and which log attains it."""
    table = pd.DataFrame({name: certified_accuracy(log, radii) for name, log in logs.items()}, index=pd.Index(radii, name="radius"))
    return pd.DataFrame({"certified_accuracy": table.max(axis=1), "best": table.idxmax(axis=1)})


def summary(logs: Mapping[str, pd.DataFrame], radii: Sequence[float]) -> pd.DataFrame:
    """One row per log: certified accuracy at each radius, ACR, abstain rate, seconds per image."""
    rows = {}
    for name, log in logs.items():
        row = {f"r={r:g}": a for r, a in zip(radii, certified_accuracy(log, radii))}
        row.update({"ACR": acr(log), "abstain": abstain_rate(log), "s/img": float(log["time"].mean()), "images": len(log)})
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")
