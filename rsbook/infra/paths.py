"""Where the book's checkout is."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root"]

def repo_root() -> Path:
    """The book's root: ``$RSBOOK_ROOT``, else the nearest folder upward from the cwd (then from the package) with ``_toc.yml``."""
    if os.environ.get("RSBOOK_ROOT"):
        return Path(os.environ["RSBOOK_ROOT"]).resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for d in (start, *start.parents):
            if (d / "_toc.yml").exists() and (d / "notebooks").is_dir():
                return d
    raise FileNotFoundError("cannot find the rsbook checkout (a folder with _toc.yml and notebooks/); run from inside it or set RSBOOK_ROOT")
