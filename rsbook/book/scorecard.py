"""The scorecard: every claim of every chapter, read from the chapters' claims files, and its verdict counts.

Each chapter writes its claims table as ``<chapter>.claims.json`` (:meth:`rsbook.book.claims.Claims.save`);
this module only reads those files, so a claim is never retyped. :func:`load_claims` gives one
row per claim, :func:`counts` the verdicts per chapter and in all, :func:`scorecard_page` the
book's scorecard page (MyST markdown) with a chapter whose file is missing (one that failed before
its claims table) listed as missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from .claims import RULE, VERDICTS

__all__ = ["COLUMNS", "MAIN_VERDICTS", "load_claims", "missing_chapters", "counts", "markdown_cell", "scorecard_page"]

#: The columns of :func:`load_claims` that the scorecard page shows (``reason`` holds the reason and the test).
COLUMNS = ("chapter", "claim", "paper", "ours", "profile", "verdict", "reason")
#: The verdicts counted for every chapter, present or not; any other verdict gets a column where it occurs.
MAIN_VERDICTS = ("reproduced", "partly", "not reproduced", "not comparable")
#: The suffix of a chapter's claims file.
SUFFIX = ".claims.json"


def _files(folder: Path, chapters: Sequence[str] | None) -> list[tuple[str, Path]]:
    if chapters is None:
        return [(p.name[: -len(SUFFIX)], p) for p in sorted(folder.glob(f"*{SUFFIX}"))]
    return [(c, folder / f"{c}{SUFFIX}") for c in chapters]


def load_claims(folder: str | Path, chapters: Sequence[str] | None = None) -> pd.DataFrame:
    """Every claim of the chapters' claims files in ``folder``, one row each, in chapter order.

    Args:
        folder: a folder of ``<chapter>.claims.json`` files.
        chapters: the chapters to read, in this order (a missing file is skipped: see
            :func:`missing_chapters`); default every file in ``folder``, by name.

    Returns:
        A DataFrame with the columns :data:`COLUMNS` (``reason`` joins the row's reason and test
        with "; "), then ``test`` and ``kind`` as the file holds them. The chapter is the
        file's name, the profile each row's own.

    >>> load_claims("/nonexistent").empty
    True
    """
    rows = []
    for chapter, path in _files(Path(folder), chapters):
        if not path.is_file():
            continue
        for r in json.loads(path.read_text()).get("claims", []):
            reason = "; ".join(t for t in (str(r.get("reason") or ""), str(r.get("test") or "")) if t)
            rows.append({"chapter": chapter, **{k: str(r.get(k, "")) for k in COLUMNS[1:-1]}, "reason": reason,
                         "test": str(r.get("test") or ""), "kind": str(r.get("kind") or "")})
    return pd.DataFrame(rows, columns=[*COLUMNS, "test", "kind"])


def missing_chapters(folder: str | Path, chapters: Sequence[str]) -> list[str]:
    """The ``chapters`` that have no claims file in ``folder``, in the given order."""
    return [c for c, p in _files(Path(folder), chapters) if not p.is_file()]


def counts(df: pd.DataFrame) -> pd.DataFrame:
    """How many claims of each chapter have each verdict, with a last row ``all`` and a column ``claims`` (the total).

    The columns are :data:`MAIN_VERDICTS`, then every other verdict that occurs (in the order of
    ``rsbook.book.claims.VERDICTS``, then unknown ones by name); chapters keep their order in ``df``.

    >>> df = pd.DataFrame({"chapter": ["a", "a", "b"], "verdict": ["reproduced", "partly", "inconclusive"]})
    >>> counts(df).loc["all"].to_dict()
    {'reproduced': 1, 'partly': 1, 'not reproduced': 0, 'not comparable': 0, 'inconclusive': 1, 'claims': 3}
    """
    present = set(df["verdict"])
    others = [v for v in VERDICTS if v not in MAIN_VERDICTS and v in present]
    others += sorted(present - set(MAIN_VERDICTS) - set(others))
    columns = [*MAIN_VERDICTS, *others]
    chapters = list(dict.fromkeys(df["chapter"]))
    table = pd.DataFrame(0, index=pd.Index([*chapters, "all"], name="chapter"), columns=[*columns, "claims"])
    for (chapter, verdict), n in df.groupby(["chapter", "verdict"], sort=False).size().items():
        table.loc[chapter, verdict] = int(n)
    table.loc["all", columns] = table.loc[chapters, columns].sum().to_numpy()
    table["claims"] = table[columns].sum(axis=1)
    return table


def markdown_cell(text: object) -> str:
    """``text`` as one markdown table cell: on one line, its pipes escaped.

    >>> markdown_cell("E[x | y]\\n  and more")
    'E[x \\\\| y] and more'
    """
    return " ".join(str(text).split()).replace("|", "\\|")


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"


def scorecard_page(folder: str | Path, profile: str, chapters: Sequence[str] | None = None,
                   failed: Sequence[str] = ()) -> str:
    """The scorecard page (MyST markdown): the verdict counts per chapter and in all, then every claim.

    Args:
        folder: the build's folder of ``<chapter>.claims.json`` files.
        profile: the profile of the build (each row also shows its own).
        chapters: this build's chapters, in book order; one without a claims file is listed as
            missing. Default: every claims file in ``folder``.
        failed: the chapters that failed in this build (their claims, if any, may be incomplete).
    """
    df = load_claims(folder, chapters)
    lost = missing_chapters(folder, chapters) if chapters is not None else []
    table = counts(df)
    order = list(chapters) if chapters is not None else list(dict.fromkeys(df["chapter"]))
    lines = [
        "# Scorecard",
        "",
        f"Every claim of every chapter of this build (profile `{profile}`), read from the claims files the chapters "
        "wrote while they ran (`<chapter>.claims.json`, the same tables as on the chapters' pages), never retyped.",
        "",
        RULE,
        "",
        "## Verdicts",
        "",
        _row(["chapter", *table.columns]),
        "|" + "---|" * (1 + len(table.columns)),
    ]
    for chapter in order:
        if chapter in lost:
            lines.append(_row([chapter, *(["–"] * (len(table.columns) - 1)), "missing"]))
        elif chapter in table.index:
            lines.append(_row([chapter, *table.loc[chapter].tolist()]))
        else:  # a claims file without a claim
            lines.append(_row([chapter, *([0] * len(table.columns))]))
    lines.append(_row(["**all**", *(f"**{n}**" for n in table.loc["all"].tolist())]))
    notes = []
    if lost:
        notes.append("**Missing**: " + ", ".join(f"`{c}`" for c in lost) + " wrote no claims file in this build (a chapter "
                     "that fails before its claims table writes none: see the [build status](status.md)); its claims are not "
                     "counted.")
    partial = [c for c in failed if c not in lost]
    if partial:
        notes.append("**Failed**: " + ", ".join(f"`{c}`" for c in partial) + " failed after writing its claims file; the rows "
                     "it holds are shown, but the chapter may have more.")
    for note in notes:
        lines += ["", note]
    lines += ["", "## Every claim", "", _row(COLUMNS), "|" + "---|" * len(COLUMNS)]
    by_chapter = {c: g for c, g in df.groupby("chapter", sort=False)}
    for chapter in order:
        if chapter in lost:
            lines.append(_row([chapter, "(no claims file: the chapter failed before its claims table)", "", "", profile, "missing", ""]))
        elif chapter in by_chapter:
            lines += [_row(r) for r in by_chapter[chapter][list(COLUMNS)].itertuples(index=False)]
    return "\n".join(lines) + "\n"
