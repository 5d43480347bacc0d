"""Durations in words, for the estimates that long runs print before they start."""

from __future__ import annotations

__all__ = ["format_duration"]


def format_duration(seconds: float) -> str:
    """Seconds below 2 minutes, minutes below 2 hours, hours above.

    >>> format_duration(90), format_duration(1923), format_duration(9000)
    ('90 s', '32 min', '2.5 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
