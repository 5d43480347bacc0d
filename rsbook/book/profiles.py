"""Run profiles (smoke / cpu / paper / dry_run), artifact folders and device choice for the notebooks.

* ``smoke``: CI and a quick check; tiny data and sample counts, recomputed in a temporary folder.
* ``cpu``: the published book on 2 CPU cores; loads the artifacts committed in ``book/artifacts/``.
* ``paper``: the papers' settings, for a GPU.
* ``dry_run``: the ``paper`` profile's architectures and code paths with tiny sizes (one batch
  per training, two images, a tiny N), on CPU, recomputed in a temporary folder. It runs in CI,
  so that a wiring mistake in the ``paper`` profile fails there, not after hours on a GPU.

The temporary folders of ``smoke`` and ``dry_run`` go under ``$RSBOOK_TMP`` when it is set, one
per chapter and profile: a notebook run (:func:`rsbook.book.pipeline.run_notebook`) sets it to a
folder it removes when the run ends, failed or not, and a staged book build gives all its chapters
one such folder, so a chapter that loads another chapter's models (the leaderboard) reuses them. Without it (direct Python use) they go into the system's temporary
folder and are removed when the process exits (under torchrun, where other ranks may still use
rank 0's folder, they are kept).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..infra.artifacts import ArtifactStore
from ..infra.paths import repo_root
from ..infra.distributed import broadcast, resolve_device, world
from ..infra.provenance import provenance

__all__ = ["PROFILES", "TEMPORARY_PROFILES", "setup_page", "check_profile", "repo_root", "artifact_store", "temporary_folder", "resolve_device", "provenance_cell"]

PROFILES = ("smoke", "cpu", "paper", "dry_run")
TEMPORARY_PROFILES = ("smoke", "dry_run")  # recompute everything into a temporary folder


def check_profile(profile: str) -> str:
    """Validate a profile name (see the module docstring)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile



def artifact_root() -> Path:
    """Where stored artifacts live: ``$RSBOOK_ARTIFACTS`` if set, else ``book/artifacts/`` of the checkout."""
    return Path(os.environ["RSBOOK_ARTIFACTS"]) if os.environ.get("RSBOOK_ARTIFACTS") else repo_root() / "book" / "artifacts"


def artifact_store(chapter: str, profile: str, recompute: bool = False) -> ArtifactStore:
    """Where a chapter's heavy results live.

    ``smoke`` and ``dry_run`` recompute everything into a fresh temporary folder (so the real
    code paths run and nothing lands in the checkout); ``cpu`` and ``paper`` share
    ``book/artifacts/<chapter>/`` (committed; configs differ, so keys differ), or
    ``$RSBOOK_ARTIFACTS/<chapter>/`` if that is set.
    """
    check_profile(profile)
    if profile in TEMPORARY_PROFILES:  # under torchrun, rank 0's folder for every rank
        w = world()
        return ArtifactStore(broadcast(_temporary_store_folder(chapter, profile) if w.main else None, w))
    return ArtifactStore(artifact_root() / chapter, recompute=recompute)


def temporary_folder(prefix: str) -> str:
    """A fresh folder for a run's temporary results: under ``$RSBOOK_TMP`` if set (its owner removes
    it, see the module docstring), else in the system's temporary folder, removed when this process
    exits unless it runs under torchrun (another rank may still be using it then)."""
    parent = os.environ.get("RSBOOK_TMP")
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=parent)
    folder = tempfile.mkdtemp(prefix=prefix)
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1:
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _temporary_store_folder(chapter: str, profile: str) -> str:
    """``$RSBOOK_TMP/rsbook-<profile>-<chapter>`` when ``$RSBOOK_TMP`` is set: one folder per chapter
    and profile, shared by every kernel given the same ``$RSBOOK_TMP`` (the chapters of one staged
    book build, so a chapter that loads another's models finds them; the store's lock makes each
    artifact computed once); else a fresh :func:`temporary_folder`."""
    parent = os.environ.get("RSBOOK_TMP")
    if parent:
        folder = Path(parent) / f"rsbook-{profile}-{chapter}"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)
    return temporary_folder(f"rsbook-{profile}-{chapter}-")


@functools.lru_cache(maxsize=None)
def _temporary_store(chapter: str, profile: str) -> ArtifactStore:
    return artifact_store(chapter, profile)


def chapter_store(chapter: str, profile: str, recompute: bool = False) -> ArtifactStore:
    """:func:`artifact_store`, with one temporary folder per process and chapter for ``smoke`` and
    ``dry_run`` (so that a chapter and the chapters that load its results share it)."""
    if profile in TEMPORARY_PROFILES:
        return _temporary_store(chapter, profile)
    return artifact_store(chapter, profile, recompute=recompute)



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


def setup_page(profile: str, device: str = "auto", data_root: str = "", threads: int = 0) -> torch.device:
    """What every chapter does after its parameters cell: check ``profile``, use ``data_root`` as the
    data root when given (instead of ``$RSBOOK_DATA``), set torch's CPU ``threads`` when positive,
    set the book's plot style, and return the device (:func:`resolve_device`)."""
    from ..infra.data import set_data_root
    from .plots import set_style

    check_profile(profile)
    if data_root:
        set_data_root(data_root, source="data_root")
    if threads:
        if not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a non-negative integer (0 keeps torch's default), got {threads!r}")
        torch.set_num_threads(threads)
    set_style()
    return resolve_device(device, profile)
