"""What the chapter modules share: one process-wide cache of :class:`~rsbook.core.certify.Smooth` objects.

A chapter certifies each of its models many times (per noise level, test subset, sequential or
fixed ``n``). It builds one :class:`Smooth` per model and reuses it, so that the model is loaded
once and the engine's batch size is chosen once; :func:`smooth_for` holds those objects for every
chapter in one dict, keyed by what the chapter says identifies the model (e.g.
``(CHAPTER, config_key(model), str(device))``; lead the key with the chapter's name so that two
chapters' keys cannot collide).
"""

from __future__ import annotations

from typing import Callable, Hashable

from ..core.certify import Smooth

__all__ = ["smooth_for", "clear_smooths"]

_SMOOTHS: dict[Hashable, Smooth] = {}


def smooth_for(key: Hashable, build: Callable[[], Smooth]) -> Smooth:
    """The :class:`Smooth` cached under ``key``, built by ``build()`` on the first request (and kept for the process)."""
    if key not in _SMOOTHS:
        _SMOOTHS[key] = build()
    return _SMOOTHS[key]


def clear_smooths() -> None:
    """Forget every cached :class:`Smooth` (their models are freed once nothing else holds them)."""
    _SMOOTHS.clear()
