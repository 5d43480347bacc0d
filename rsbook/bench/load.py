"""The load monitor: how busy the machine was with other work while a benchmark measured.

A benchmark on a busy machine measures the machine, not the code. Each run records how much CPU
time other processes and the hypervisor (steal) took during its measured rounds, the load average
before them, and how far its rounds disagree (:class:`LoadMonitor`, :func:`contention`); a run
over the limits is marked *contended*, says so in its table, and is refused where it would
replace stored results (:func:`is_contended`, :class:`ContentionError`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["CONTENTION_LIMITS", "ContentionError", "LoadMonitor", "contention", "is_contended"]

#: A run is contended when, during its measured rounds, other processes used at least
#: ``others`` of the CPUs, the hypervisor stole at least ``steal`` of them, or some quantity's
#: best round was ``spread`` times its worst (off Linux, where CPU accounting is unknown: the
#: 1-minute load average before it was above the core count).
CONTENTION_LIMITS = {"others": 0.25, "steal": 0.10, "spread": 1.5}


class ContentionError(RuntimeError):
    """A benchmark ran on a busy machine; its numbers must not replace stored ones."""


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU jiffies of the whole machine since boot, or None off Linux."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


class LoadMonitor:
    """How busy the machine was with *other* work while a ``with`` block ran.

    ``others``: CPU time of all other processes over the machine's capacity; ``steal``: time
    the hypervisor gave to other guests; ``loadavg``: the 1-minute load average at the start.
    Off Linux only ``loadavg`` is known.
    """

    def __init__(self):
        self.result: dict[str, float] = {}

    def __enter__(self) -> "LoadMonitor":
        self._stat, self._self = _proc_stat(), sum(os.times()[:2])
        self._loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        return self

    def __exit__(self, *exc) -> None:
        stat, own = _proc_stat(), sum(os.times()[:2])
        out = {"loadavg": self._loadavg, "cores": float(os.cpu_count() or 1), "others": float("nan"), "steal": float("nan")}
        if self._stat and stat and stat[2] > self._stat[2]:
            tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            total = stat[2] - self._stat[2]
            mine = (own - self._self) * tick
            out["others"] = max(0.0, (stat[0] - self._stat[0] - mine) / total)
            out["steal"] = (stat[1] - self._stat[1]) / total
        self.result = out


def contention(load: dict[str, float], runs: dict[str, list[float]]) -> dict[str, Any]:
    """Whether a run was contended, and why (see :data:`CONTENTION_LIMITS`)."""
    spread = max((max(v) / min(v) for v in runs.values() if v and min(v) > 0), default=1.0)
    reasons = []
    if load.get("others", 0) >= CONTENTION_LIMITS["others"]:
        reasons.append(f"other processes used {load['others']:.0%} of the CPUs")
    if load.get("steal", 0) >= CONTENTION_LIMITS["steal"]:
        reasons.append(f"the hypervisor stole {load['steal']:.0%} of the CPU time")
    # The load average counts this process's own threads (and lags a minute behind), so it
    # decides only where the CPU accounting of /proc/stat is unavailable.
    if math.isnan(load.get("others", math.nan)) and load.get("loadavg", 0) > load.get("cores", math.inf):
        reasons.append(f"the load average was {load['loadavg']:.1f} on {load['cores']:.0f} cores before the run")
    if spread >= CONTENTION_LIMITS["spread"]:
        reasons.append(f"rounds disagree up to {spread:.2f}x")
    return {**load, "spread": spread, "contended": bool(reasons), "reasons": reasons}


def is_contended(result: dict[str, Any]) -> bool:
    """Whether a benchmark result was measured on a busy machine (results from before this
    check existed carry no record and count as not contended)."""
    return bool(result["meta"].get("contention", {}).get("contended", False))
