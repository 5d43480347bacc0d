"""Claims as data: every chapter's "the paper's claims and ours" table, with one statistical verdict rule.

Each row is a :class:`Claim`: the claim, the paper's value, ours, the profile that produced
ours, a verdict, the test that decided it and the reason. The rule is the same for the whole
book (:data:`RULE` is printed under every claims table):

* a **number** (an accuracy, a distance, a rate) is an :class:`Estimate` with its 95 %
  confidence interval over the test images: Clopper-Pearson for a proportion
  (:func:`proportion`), the distribution-free order-statistic interval for a median
  (:func:`median`, scipy's ``quantile_test``), Student's t for a mean (:func:`mean`), or an
  exact value (:func:`exact`). It is ``reproduced`` when the paper's value lies in our interval
  widened on both sides by a stated ``margin`` (the allowance for a smaller model or budget,
  shown in the row), and ``not reproduced`` otherwise (``inconclusive`` when the interval is
  unbounded, so that it could not have failed). It is ``not comparable`` when our setting
  cannot produce the quantity at all (e.g. a radius beyond the cap that our sample size puts on
  every certificate); the reason then says why.
* a **qualitative** claim (an ordering, a property) is decided by one or more checks. A check
  is a plain boolean for an exact quantity (a closed form, a count that is 0 or not), or a
  :class:`Check` from a one-sided test on the same images (:func:`greater`): it *holds* when
  the test rejects "not better" at 5 %, *fails* when the reverse test rejects, and is
  *undecided* otherwise. The claim is ``reproduced`` if every check holds, ``not reproduced`` if
  none holds and one fails, ``partly`` if some hold and some do not, and ``inconclusive`` if all
  are undecided.

:meth:`Claims.show` renders the table; :meth:`Claims.save` writes it as JSON to the path in
``$RSBOOK_CLAIMS`` (set by the book runner, beside the executed notebook), so that a
scorecard page can collect every chapter's claims without retyping them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["Claim", "Claims", "Estimate", "Check", "VERDICTS", "RULE", "LEVEL", "MARGIN", "proportion", "median", "mean",
           "exact", "greater", "numeric_verdict", "qualitative_verdict"]

#: Every verdict a claim can have.
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive", "not comparable")
LEVEL = 0.95  # every interval's confidence level; a one-sided test's level is 1 - (1 - LEVEL)
MARGIN = 0.05  # the default margin of a proportion: an accuracy of a smaller model / budget than the paper's

RULE = (f"**Verdicts.** A number is *reproduced* when the paper's value lies in our {LEVEL:.0%} confidence interval "
        "over the test images (Clopper-Pearson for an accuracy, the order-statistic interval for a median, Student's t "
        "for a mean), widened on both sides by the margin shown in its row (the allowance for our smaller model and "
        "budget), and *not reproduced* otherwise (*inconclusive* when too few images leave the interval unbounded); "
        "*not comparable* when our setting cannot produce it (the reason says why). A comparison holds when a one-sided test on the same images rejects \"not better\" at "
        f"{1 - LEVEL:.0%}, fails when the reverse test does, and is undecided otherwise; a qualitative claim is "
        "*reproduced* when all its checks hold, *partly* when some do, *not reproduced* when none does and one fails, "
        "and *inconclusive* when all are undecided.")


@dataclass(frozen=True)
class Estimate:
    """A number we measured and its confidence interval ``[low, high]`` (``how`` names the interval)."""

    value: float
    low: float
    high: float
    how: str
    n: int = 0

    def __post_init__(self) -> None:
        if not (self.low <= self.value <= self.high) and not any(math.isnan(v) for v in (self.low, self.value, self.high)):
            raise ValueError(f"the estimate {self.value} lies outside its interval [{self.low}, {self.high}]")

    def covers(self, paper: float, margin: float = 0.0) -> bool:
        """Whether ``paper`` lies in ``[low - margin, high + margin]`` (to the 1e-9 of rounded values)."""
        return self.low - margin - 1e-9 <= float(paper) <= self.high + margin + 1e-9


def proportion(successes: int, n: int, level: float = LEVEL) -> Estimate:
    """``successes / n`` with its two-sided exact Clopper-Pearson interval (scipy's ``binomtest``).

    >>> e = proportion(30, 100); round(e.low, 3), round(e.high, 3)
    (0.212, 0.4)
    """
    from scipy.stats import binomtest

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(level, method="exact")
    return Estimate(successes / n, float(ci.low), float(ci.high), "Clopper-Pearson", int(n))


def median(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Estimate:
    """The sample median with the distribution-free interval between two order statistics
    (scipy's ``quantile_test`` at ``p = 1/2``): it covers the population median with probability
    at least ``level`` for any continuous distribution. Infinite values (an attack that found
    nothing) count as large values, as they should for a median distance."""
    from scipy.stats import quantile_test

    x = np.asarray(values, dtype=float)
    if np.isnan(x).any():
        raise ValueError("the median needs values without NaN")
    if x.size == 0:  # nothing to measure (e.g. no image classified correctly): an unbounded interval, inconclusive
        return Estimate(math.nan, -math.inf, math.inf, "order statistics, no values", 0)
    big = np.finfo(float).max
    ci = quantile_test(np.minimum(x, big), p=0.5).confidence_interval(level)
    lo, hi = (math.inf if v >= big else (-math.inf if np.isnan(v) and k == 0 else (math.inf if np.isnan(v) else float(v)))
              for k, v in enumerate((ci.low, ci.high)))
    return Estimate(float(np.median(x)), lo, hi, "order statistics", int(x.size))


def mean(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Estimate:
    """The sample mean of the finite ``values`` with Student's t interval (scipy's ``ttest_1samp``)."""
    from scipy.stats import ttest_1samp

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        raise ValueError(f"a mean's interval needs at least 2 finite values, got {x.size}")
    if np.ptp(x) == 0:
        return Estimate(float(x[0]), float(x[0]), float(x[0]), "Student's t", int(x.size))
    ci = ttest_1samp(x, 0.0).confidence_interval(level)
    return Estimate(float(x.mean()), float(ci.low), float(ci.high), "Student's t", int(x.size))


def exact(value: float, how: str = "exact") -> Estimate:
    """A number without sampling error at this setting (a closed form, a measured count)."""
    return Estimate(float(value), float(value), float(value), how)


@dataclass(frozen=True)
class Check:
    """The outcome of a one-sided comparison: ``holds`` (True), fails (False) or undecided (None)."""

    outcome: bool | None
    test: str

    def __bool__(self) -> bool:  # a plain truth test asks whether it holds
        return self.outcome is True


def greater(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, what: str = "a > b",
            level: float = LEVEL) -> Check:
    """Is ``a`` larger than ``b``, paired by image? For 0/1 values (certified or not) the exact sign
    test on the discordant pairs (scipy's ``binomtest``), otherwise the Wilcoxon signed-rank test
    (``scipy.stats.wilcoxon``; infinite distances count as larger than every finite one). Holds
    when the one-sided p-value is below ``1 - level``, fails when the reverse one is, else undecided.
    """
    from scipy.stats import binomtest, wilcoxon

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"greater() compares two paired 1-D samples, got shapes {a.shape} and {b.shape}")
    cut = 1 - level
    if np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all():
        up, down = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        if up + down == 0:
            return Check(None, f"{what}: no discordant image (sign test)")
        p_up = binomtest(up, up + down, 0.5, alternative="greater").pvalue
        p_down = binomtest(down, up + down, 0.5, alternative="greater").pvalue
        name = f"sign test, {up} vs {down} discordant images"
    else:
        both = np.concatenate([a, b])
        top = 2 * np.abs(both[np.isfinite(both)]).max(initial=0.0) + 1  # an infinity: larger than every finite value
        d = np.where(np.isinf(a), np.sign(a) * top, a) - np.where(np.isinf(b), np.sign(b) * top, b)
        if not np.any(d != 0):
            return Check(None, f"{what}: every pair tied (Wilcoxon)")
        p_up = wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue
        p_down = wilcoxon(d, alternative="less", zero_method="zsplit").pvalue
        name = f"Wilcoxon signed-rank on {a.size} paired images"
    outcome = True if p_up < cut else (False if p_down < cut else None)
    return Check(outcome, f"{what}: one-sided p = {p_up:.3g} ({name})")


def numeric_verdict(paper: float, ours: Estimate, margin: float) -> str:
    """``reproduced`` if ``paper`` lies in ``ours``'s interval widened by ``margin``, else ``not reproduced``;
    ``inconclusive`` if it lies there only because the interval is unbounded (too few values to bound
    it: such a check could not have failed).

    >>> numeric_verdict(0.43, proportion(40, 100), 0.05), numeric_verdict(0.75, proportion(40, 100), 0.05)
    ('reproduced', 'not reproduced')
    >>> numeric_verdict(0.5, median([0.2, 0.9]), 0.05), numeric_verdict(0.5, median([]), 0.05)
    ('inconclusive', 'inconclusive')
    """
    if not ours.covers(paper, margin):
        return "not reproduced"
    return "reproduced" if math.isfinite(ours.low) and math.isfinite(ours.high) else "inconclusive"


def _outcome(c: bool | Check) -> bool | None:
    return c.outcome if isinstance(c, Check) else bool(c)


def qualitative_verdict(checks: Sequence[bool | Check] | bool | Check) -> str:
    """``reproduced`` if every check holds, ``partly`` if some hold and some do not, ``not reproduced``
    if none holds and one fails, ``inconclusive`` if all are undecided (see the module docstring).

    >>> qualitative_verdict([True, True]), qualitative_verdict([True, False]), qualitative_verdict([False, Check(None, "")])
    ('reproduced', 'partly', 'not reproduced')
    """
    checks = [checks] if isinstance(checks, (bool, Check)) else list(checks)
    if not checks:
        raise ValueError("a qualitative claim needs at least one check")
    outcomes = [_outcome(c) for c in checks]
    if all(o is True for o in outcomes):
        return "reproduced"
    if any(o is True for o in outcomes):
        return "partly"
    return "not reproduced" if any(o is False for o in outcomes) else "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One row of a claims table."""

    claim: str
    paper: str
    ours: str
    profile: str
    verdict: str
    reason: str = ""
    test: str = ""
    kind: str = "qualitative"  # or "numeric"
    paper_value: float | None = None
    ours_value: float | None = None
    ours_low: float | None = None
    ours_high: float | None = None
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def _json_float(v: float | None) -> float | str | None:
    return v if v is None or math.isfinite(v) else ("inf" if v > 0 else "-inf")


@dataclass
class Claims:
    """The claims of one chapter at one profile."""

    chapter: str
    profile: str
    rows: list[Claim] = field(default_factory=list)

    def numeric(self, claim: str, paper: float, ours: Estimate, *, margin: float = MARGIN, comparable: bool = True,
                why: str = "", fmt: str = "{:.2f}") -> Claim:
        """Add a number (see :data:`RULE`): ``ours`` is an :class:`Estimate`; ``margin`` is stated in the row."""
        if not isinstance(ours, Estimate):
            raise TypeError(f"ours must be an Estimate (proportion, median, mean or exact), got {type(ours).__name__}")
        interval = f"[{fmt.format(ours.low)}, {fmt.format(ours.high)}]"
        if comparable:
            verdict = numeric_verdict(paper, ours, margin)
            test = (f"paper {fmt.format(paper)} {'outside' if verdict == 'not reproduced' else 'in'} ours {interval} "
                    f"({ours.how}{f', {ours.n} images' if ours.n else ''}) +- margin {fmt.format(margin)}")
        else:
            verdict, test = "not comparable", f"ours {interval} ({ours.how})"
        row = Claim(claim, fmt.format(paper), fmt.format(ours.value), self.profile, verdict, why, test, "numeric", float(paper),
                    ours.value, ours.low, ours.high, float(margin))
        self.rows.append(row)
        return row

    def qualitative(self, claim: str, paper: str, ours: str, checks: Sequence[bool | Check] | bool | Check, *,
                    why: str = "", test: str = "") -> Claim:
        """Add a claim decided by ``checks`` (booleans for exact quantities, :class:`Check` for tests);
        ``test`` says what the checks are (the statistical ones add their own p-values)."""
        listed = [checks] if isinstance(checks, (bool, Check)) else list(checks)
        described = "; ".join([t for t in [test] if t] + [c.test for c in listed if isinstance(c, Check)])
        row = Claim(claim, paper, ours, self.profile, qualitative_verdict(listed), why, described)
        self.rows.append(row)
        return row

    def not_reproduced_here(self, item: str, why: str) -> Claim:
        """Name a paper item (a table, a figure) this chapter does not reproduce, with the reason."""
        row = Claim(item, "(in the paper)", "not run", self.profile, "not comparable", why, "")
        self.rows.append(row)
        return row

    def table(self) -> pd.DataFrame:
        """The claims as a table (claim, paper, ours, verdict, test, reason)."""
        return pd.DataFrame([asdict(r) for r in self.rows], columns=[f for f in Claim.__dataclass_fields__])[
            ["claim", "paper", "ours", "verdict", "test", "reason"]]

    def counts(self) -> dict[str, int]:
        """How many rows have each verdict."""
        return {v: sum(r.verdict == v for r in self.rows) for v in VERDICTS}

    def to_json(self) -> str:
        rows = [{k: _json_float(v) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in self.rows]
        return json.dumps({"chapter": self.chapter, "profile": self.profile, "level": LEVEL, "rule": RULE, "claims": rows},
                          indent=1) + "\n"

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
        paper's, once for all rows), the verdict counts and the rule under it, and save it."""
        from IPython.display import Markdown, display

        from .tables import show_table

        show_table(self.table(), index=False)
        if note:
            display(Markdown(note))
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items() if v)
        display(Markdown(f"{len(self.rows)} claims: {counts}.\n\n{RULE}"))
        self.save()


#: The ``how`` of a number timed while the page is built (a speed): it differs from build to build.
TIMED = "timed during this build"
#: The fields of a timed row that :func:`diff_claims` does not compare (its claim, paper value and verdict it does).
TIMED_FIELDS = ("ours", "ours_value", "ours_low", "ours_high", "test")


def diff_claims(reference: dict, built: dict) -> list[str]:
    """The differences between two chapters' claims files (``Claims.to_json``, parsed): one line per
    added, missing or changed row field, the rows matched by their claim text. Empty when the two
    builds show the same claims, values and verdicts (a number :data:`TIMED` during the build is
    compared by its claim, paper value and verdict only)."""
    out = []
    for key in ("chapter", "profile"):
        if reference.get(key) != built.get(key):
            out.append(f"{key}: {reference.get(key)!r} -> {built.get(key)!r}")
    ref = {r["claim"]: r for r in reference.get("claims", [])}
    new = {r["claim"]: r for r in built.get("claims", [])}
    where = reference.get("chapter", "?")
    out += [f"{where}: claim no longer shown: {c!r}" for c in ref if c not in new]
    out += [f"{where}: new claim: {c!r}" for c in new if c not in ref]
    for c in ref.keys() & new.keys():
        timed = f"({TIMED})" in str(ref[c].get("test", "")) and f"({TIMED})" in str(new[c].get("test", ""))
        for f in sorted(ref[c].keys() | new[c].keys()):
            if timed and f in TIMED_FIELDS:
                continue
            if ref[c].get(f) != new[c].get(f):
                out.append(f"{where}: {c!r}: {f}: {ref[c].get(f)!r} -> {new[c].get(f)!r}")
    return out


def diff_claim_files(reference: str | Path, built: str | Path) -> list[str]:
    """:func:`diff_claims` over two folders of ``<chapter>.claims.json`` files (every reference file
    must have its built counterpart)."""
    reference, built = Path(reference), Path(built)
    files = sorted(reference.glob("*.claims.json"))
    if not files:
        raise FileNotFoundError(f"no *.claims.json files in {reference}")
    out = []
    for f in files:
        other = built / f.name
        if not other.is_file():
            out.append(f"{f.name}: not built (no {other})")
            continue
        out += diff_claims(json.loads(f.read_text()), json.loads(other.read_text()))
    return out
