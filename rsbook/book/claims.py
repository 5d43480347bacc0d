"""Claims as data: every chapter's "the paper's claims and ours" table, with one verdict rule.

Each row is a :class:`Claim`: the claim, the paper's value, ours, the profile that produced
ours, a verdict and the reason. The verdict follows one rule for the whole book:

* a **numeric** claim (an accuracy, a rate) is ``reproduced`` when ours is within ``tol`` of
  the paper's (default :data:`TOLERANCE` = 0.05, absolute), ``partly`` within ``2 * tol``, and
  ``not reproduced`` beyond; it is ``not comparable`` when our setting cannot produce the
  quantity at all (e.g. a radius beyond the cap that our sample size puts on every
  certificate) -- the reason then says why;
* a **qualitative** claim (an ordering, a "best at") is checked by one or more boolean
  checks: ``reproduced`` if all hold, ``partly`` if some do, ``not reproduced`` if none.

:meth:`Claims.show` renders the table; :meth:`Claims.save` writes it as JSON to the path in
``$RSBOOK_CLAIMS`` (set by the book runner, beside the executed notebook), so that a
scorecard page can collect every chapter's claims without retyping them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

__all__ = ["Claim", "Claims", "TOLERANCE", "VERDICTS", "numeric_verdict", "qualitative_verdict"]

TOLERANCE = 0.05
VERDICTS = ("reproduced", "partly", "not reproduced", "not comparable")


def numeric_verdict(paper: float, ours: float, tol: float = TOLERANCE) -> str:
    """``reproduced`` if ``|ours - paper| <= tol``, ``partly`` if ``<= 2 tol``, else ``not reproduced``.

    >>> numeric_verdict(0.43, 0.40), numeric_verdict(0.43, 0.35), numeric_verdict(0.43, 0.2)
    ('reproduced', 'partly', 'not reproduced')
    """
    d = abs(float(ours) - float(paper))
    eps = 1e-9  # values are shown rounded; a difference of exactly tol counts as within
    return "reproduced" if d <= tol + eps else ("partly" if d <= 2 * tol + eps else "not reproduced")


def qualitative_verdict(checks: Sequence[bool] | bool) -> str:
    """``reproduced`` if every check holds, ``partly`` if some do, ``not reproduced`` if none."""
    checks = [bool(checks)] if isinstance(checks, bool) else [bool(c) for c in checks]
    return "reproduced" if all(checks) else ("partly" if any(checks) else "not reproduced")


@dataclass(frozen=True)
class Claim:
    """One row of a claims table."""

    claim: str
    paper: str
    ours: str
    profile: str
    verdict: str
    reason: str = ""
    kind: str = "qualitative"  # or "numeric"
    paper_value: float | None = None
    ours_value: float | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class Claims:
    """The claims of one chapter at one profile."""

    chapter: str
    profile: str
    rows: list[Claim] = field(default_factory=list)

    def numeric(self, claim: str, paper: float, ours: float, *, tol: float = TOLERANCE, comparable: bool = True,
                why: str = "", fmt: str = "{:.2f}") -> Claim:
        """Add a numeric claim (see the module docstring for the rule); ``why`` explains a gap."""
        if comparable:
            verdict = numeric_verdict(paper, ours, tol)
            d = float(ours) - float(paper)
            gap = "" if verdict == "reproduced" else f"ours {'higher' if d > 0 else 'lower'} by {abs(d):.2f}"
        else:
            verdict, gap = "not comparable", ""
        reason = "; ".join(p for p in (gap, why) if p)
        row = Claim(claim, fmt.format(paper), fmt.format(ours), self.profile, verdict, reason, "numeric", float(paper), float(ours), tol)
        self.rows.append(row)
        return row

    def qualitative(self, claim: str, paper: str, ours: str, checks: Sequence[bool] | bool, *, why: str = "") -> Claim:
        """Add a qualitative claim decided by ``checks`` (all hold / some / none)."""
        row = Claim(claim, paper, ours, self.profile, qualitative_verdict(checks), why)
        self.rows.append(row)
        return row

    def table(self) -> pd.DataFrame:
        """The claims as a table (claim, paper, ours, profile, verdict, reason)."""
        return pd.DataFrame([asdict(r) for r in self.rows], columns=[f for f in Claim.__dataclass_fields__])[
            ["claim", "paper", "ours", "profile", "verdict", "reason"]]

    def to_json(self) -> str:
        return json.dumps({"chapter": self.chapter, "profile": self.profile, "tolerance": TOLERANCE,
                           "claims": [asdict(r) for r in self.rows]}, indent=1) + "\n"

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the claims as JSON to ``path`` or ``$RSBOOK_CLAIMS``; returns the path (``None`` if neither)."""
        path = path or os.environ.get("RSBOOK_CLAIMS")
        if not path:
            return None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.to_json())
        return Path(path)

    def show(self, note: str = "") -> None:
        """Display the table (full text, wrapped), ``note`` (e.g. how our setting differs from the
        paper's, once for all rows) and the verdict rule under it, and save it."""
        from IPython.display import Markdown, display

        from .tables import show_table

        show_table(self.table(), index=False)
        if note:
            display(Markdown(note))
        display(Markdown(f"Verdicts: a number is *reproduced* when ours is within {TOLERANCE:.2f} of the paper's, *partly* "
                         f"within {2 * TOLERANCE:.2f}, and *not comparable* when our setting cannot produce it; a "
                         "qualitative claim is *reproduced* when all its checks hold and *partly* when some do."))
        self.save()
