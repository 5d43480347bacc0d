"""Tables in one style for the whole book: full text, wrapped, no sideways scrolling."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

__all__ = ["show_table", "styled"]

_STYLES = [
    {"selector": "th, td", "props": "white-space: normal; overflow-wrap: break-word; max-width: 24em; padding: 0.2em 0.5em;"},
    {"selector": "th", "props": "text-align: left; vertical-align: bottom;"},
    {"selector": "td", "props": "vertical-align: top;"},
    {"selector": "", "props": "font-size: 0.85em; border-collapse: collapse;"},
]


def styled(df: pd.DataFrame, formats: Mapping[str, str] | str | None = "{:.3f}", index: bool = True, caption: str | None = None):
    """A pandas ``Styler`` of ``df`` in the book's style (floats formatted, text wrapped).

    A named single-level index becomes the first column (a separate header row for its
    name would waste a line and wrap the name letter by letter).
    """
    if index and df.index.nlevels == 1 and df.index.name:
        df, index = df.reset_index(), False
        if isinstance(formats, dict) and pd.api.types.is_float_dtype(df.iloc[:, 0]):
            formats = {df.columns[0]: "{:g}", **formats}
    st = df.style.set_table_styles(_STYLES)
    given = {}
    if isinstance(formats, str):
        given = {c: formats for c in df.columns if pd.api.types.is_float_dtype(df[c])}
    elif formats:
        given = dict(formats)
    text = [c for c in df.columns if c not in given and not pd.api.types.is_numeric_dtype(df[c])]
    # a later format() resets the columns it is not given, so every column gets its formatter in one call;
    # text is escaped (a "<=" in a claim is text, not markup)
    if given:
        st = st.format(given, na_rep="-", escape="html")
    if text:
        st = st.format(subset=text, escape="html", na_rep="-")
    if not index:
        st = st.hide(axis="index")
    elif pd.api.types.is_float_dtype(df.index):
        st = st.format_index(lambda v: f"{v:g}")
    if caption:
        st = st.set_caption(caption)
    return st


def show_table(df: pd.DataFrame, formats: Mapping[str, str] | str | None = "{:.3f}", index: bool = True, caption: str | None = None) -> None:
    """Display ``df`` with :func:`styled`."""
    from IPython.display import display

    display(styled(df, formats, index, caption))
