"""What the chapter modules share: one process-wide cache of :class:`~rsbook.core.certify.Smooth` objects,
and the storing of a table that is a pure function of its config (:func:`stored_table`).

A chapter certifies each of its models many times (per noise level, test subset, sequential or
fixed ``n``). It builds one :class:`Smooth` per model and reuses it, so that the model is loaded
once and the engine's batch size is chosen once; :func:`smooth_for` holds those objects for every
chapter in one dict, keyed by what the chapter says identifies the model (e.g.
``(CHAPTER, config_key(model), str(device))``; lead the key with the chapter's name so that two
chapters' keys cannot collide).
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import pandas as pd

from ..core.certify import Smooth
from ..infra.artifacts import ArtifactStore

__all__ = ["smooth_for", "clear_smooths", "stored_table"]

_SMOOTHS: dict[Hashable, Smooth] = {}


def smooth_for(key: Hashable, build: Callable[[], Smooth]) -> Smooth:
    """The :class:`Smooth` cached under ``key``, built by ``build()`` on the first request (and kept for the process)."""
    if key not in _SMOOTHS:
        _SMOOTHS[key] = build()
    return _SMOOTHS[key]


def clear_smooths() -> None:
    """Forget every cached :class:`Smooth` (their models are freed once nothing else holds them)."""
    _SMOOTHS.clear()


def stored_table(store: ArtifactStore, config: Any, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The table ``make()`` computes for ``config``, stored in ``store`` as TSV (loaded if it is there).

    For tables computed from the config alone, on no device (the exact worst-case searches of
    chapters 2 and 4); float values read back exactly as computed.
    """
    def compute(out, work):
        make().to_csv(out, sep="\t", index=False)

    path, _ = store.load_or_compute(config, compute, "tsv")
    return pd.read_csv(path, sep="\t")
