"""Figures and tables in one style for the whole book."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.metrics import certified_accuracy

__all__ = ["set_style", "plot_certified_accuracy", "paper_vs_ours", "paper_vs_ours_by_radius"]


def set_style() -> None:
    """The book's seaborn style (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.figsize": (6.4, 4.0), "figure.dpi": 110, "savefig.bbox": "tight", "axes.titlesize": "medium"})


def plot_certified_accuracy(
    logs: Mapping[str, pd.DataFrame],
    paper: Mapping[str, Mapping[float, float]] | None = None,
    max_radius: float | None = None,
    ax: plt.Axes | None = None,
    title: str | None = None,
    norm: str = "l2",
) -> plt.Axes:
    """Certified accuracy vs radius, one line per log; the paper's points as markers of the same colour.

    ``paper`` maps the same labels as ``logs`` to ``{radius: accuracy}`` (published values).
    """
    ax = ax or plt.subplots()[1]
    if max_radius is None:
        max_radius = max(float(log["radius"].max()) for log in logs.values()) * 1.05 + 1e-9
    radii = np.linspace(0.0, max_radius, 400)
    colors = dict(zip(logs, sns.color_palette(n_colors=max(len(logs), 1))))
    for name, log in logs.items():
        ax.plot(radii, certified_accuracy(log, radii), color=colors[name], label=f"{name} (ours)")
    for name, points in (paper or {}).items():
        r, a = zip(*sorted(points.items()))
        ax.plot(r, a, linestyle="none", marker="o", mfc="none", color=colors.get(name, "k"), label=f"{name} (paper)")
    ax.set(xlabel=f"radius ({norm})", ylabel="certified accuracy", ylim=(0, 1), xlim=(0, max_radius), title=title)
    ax.legend(fontsize="small", ncol=2)
    return ax


def paper_vs_ours(ours: Mapping[str, Mapping[float, float]], paper: Mapping[str, Mapping[float, float]], radii: Sequence[float]) -> pd.DataFrame:
    """A long table ``setting, radius, paper, ours, ours - paper`` for the radii both report."""
    rows = []
    for name in ours:
        for r in radii:
            p = paper.get(name, {}).get(r, np.nan)
            o = ours[name].get(r, np.nan)
            rows.append({"setting": name, "radius": r, "paper": p, "ours": o, "ours - paper": o - p})
    return pd.DataFrame(rows)


def paper_vs_ours_by_radius(long: pd.DataFrame) -> pd.DataFrame:
    """:func:`paper_vs_ours` reshaped to read at a glance: one row per setting and source
    (paper, ours, ours - paper), one column per radius."""
    wide = long.melt(id_vars=["setting", "radius"], value_vars=["paper", "ours", "ours - paper"], var_name="source")
    wide["radius"] = wide["radius"].map(lambda r: f"r = {r:g}")
    out = wide.pivot_table(index=["setting", "source"], columns="radius", values="value", sort=False)
    out.columns.name = None
    return out
