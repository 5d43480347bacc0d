"""The certificate audit: attack every certified point, and show that the audit can find a violation.

A certificate says that the certified classifier answers ``c_A`` everywhere within radius ``R`` of
``x``. The audit looks for a point closer than ``R`` where a classifier answers another class:

* along a direction given by an attack (from ``x`` toward the attack's adversarial point), at
  ``steps`` equally spaced distances up to ``factor * R`` (:func:`first_wrong_on_grid`), one
  batched call per round over all images still open, stopping an image at its first wrong answer;
* a **violation** is a wrong answer at a distance below ``R``; the **negative control** is the
  same audit of a certificate inflated ``factor``-fold (wrong answers below ``factor * R``). An
  audit that cannot find violations of the inflated certificate audits nothing, so its verdict
  stands only if its control finds some (:func:`audit_counts`).

Whether a wrong answer is a violation depends on the classifier: a Monte-Carlo ``predict`` of the
smoothed classifier answers wrongly with probability at most its ``alpha`` even where the
certificate holds, so its calls run at a small ``alpha`` and the page states the expected number
of false alarms (calls x alpha). No library audits certificates, so this is written here; the
attacks themselves are foolbox's (:mod:`rsbook.methods.distances`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from ..core.certificate import ABSTAIN

__all__ = ["first_wrong_on_grid", "audit_counts"]


def first_wrong_on_grid(answer: Callable[[list[tuple[int, int, torch.Tensor]]], list[int]], x: torch.Tensor,
                        direction: torch.Tensor, reach: Sequence[float], labels: Sequence[int],
                        steps: int) -> tuple[np.ndarray, np.ndarray]:
    """For every image ``i``, the smallest ``t_k = k * reach[i] / steps`` (``k = 1 .. steps``) at which
    ``answer`` gives a class other than ``labels[i]`` and other than ``ABSTAIN`` at
    ``x[i] + t_k * direction[i] / ||direction[i]||``; ``inf`` if none (or if the direction is 0 or
    ``reach[i]`` is not positive). Returns the distances and the number of points asked per image.

    ``answer`` receives a list of ``(image, k, point)`` and returns their classes in order; every
    round asks one point per still-open image, so the classifier batches across images.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    reach = np.asarray(reach, dtype=float)
    norms = direction.flatten(1).norm(dim=1)
    unit = direction / norms.clamp_min(1e-30).view(-1, *([1] * (direction.dim() - 1)))
    out = np.full(len(x), math.inf)
    open_ = [i for i in range(len(x)) if norms[i] > 0 and reach[i] > 0 and math.isfinite(reach[i])]
    asked = np.zeros(len(x), dtype=int)
    for k in range(1, steps + 1):
        if not open_:
            break
        queries = [(i, k, x[i] + (k * reach[i] / steps) * unit[i]) for i in open_]
        classes = answer(queries)
        asked[open_] += 1
        still = []
        for (i, _, _), c in zip(queries, classes):
            if c != ABSTAIN and c != int(labels[i]):
                out[i] = k * reach[i] / steps
            else:
                still.append(i)
        open_ = still
    return out, asked


def audit_counts(radius: Sequence[float], wrong_at: Sequence[float], factor: float) -> dict[str, int]:
    """Certified points (``radius > 0``), violations (a wrong answer closer than the radius) and the
    negative control's violations (closer than ``factor`` times the radius)."""
    r, w = np.asarray(radius, dtype=float), np.asarray(wrong_at, dtype=float)
    cert = r > 0
    return {"certified": int(cert.sum()), "violations": int((cert & (w < r)).sum()),
            "control violations": int((cert & (w < factor * r)).sum())}
