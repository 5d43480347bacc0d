"""Run profiles (smoke / cpu / paper), artifact folders and device choice for the notebooks."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .artifacts import ArtifactStore
from .provenance import provenance

__all__ = ["PROFILES", "check_profile", "repo_root", "artifact_store", "resolve_device", "provenance_cell"]

PROFILES = ("smoke", "cpu", "paper")


def check_profile(profile: str) -> str:
    """Validate a profile name: ``smoke`` (CI, tiny, recomputes), ``cpu`` (the published book), ``paper`` (GPU)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def repo_root() -> Path:
    """The book's root: ``$RSBOOK_ROOT``, else the nearest folder upward from the cwd (then from the package) with ``_toc.yml``."""
    if os.environ.get("RSBOOK_ROOT"):
        return Path(os.environ["RSBOOK_ROOT"]).resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for d in (start, *start.parents):
            if (d / "_toc.yml").exists() and (d / "notebooks").is_dir():
                return d
    raise FileNotFoundError("cannot find the rsbook checkout (a folder with _toc.yml and notebooks/); run from inside it or set RSBOOK_ROOT")


def artifact_store(chapter: str, profile: str, recompute: bool = False) -> ArtifactStore:
    """Where a chapter's heavy results live.

    ``smoke`` recomputes everything into a fresh temporary folder (so the real code paths
    run); ``cpu`` and ``paper`` share ``book/artifacts/<chapter>/`` (committed; configs differ,
    so keys differ), or ``$RSBOOK_ARTIFACTS/<chapter>/`` if that is set.
    """
    check_profile(profile)
    if profile == "smoke":
        return ArtifactStore(tempfile.mkdtemp(prefix=f"rsbook-smoke-{chapter}-"), recompute=True)
    base = Path(os.environ["RSBOOK_ARTIFACTS"]) if os.environ.get("RSBOOK_ARTIFACTS") else repo_root() / "book" / "artifacts"
    return ArtifactStore(base / chapter, recompute=recompute)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` if available else ``cpu``; otherwise the named device, checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use device='auto' or 'cpu'")
    return dev


def provenance_cell(profile: str, seed: int, device: torch.device | str, **extra: object) -> dict[str, str]:
    """Provenance of a notebook run as a dict (shown by the notebook's provenance cell).

    When the book runner sets ``$RSBOOK_RUN_INFO``, the dict is also written there so that the
    status page can name the device and profile.
    """
    info = {"profile": profile, "seed": str(seed), **provenance(device), **{k: str(v) for k, v in extra.items()}}
    path = os.environ.get("RSBOOK_RUN_INFO")
    if path:
        Path(path).write_text(json.dumps(info, indent=2))
    return info
