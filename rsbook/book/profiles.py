"""Run profiles (smoke / cpu / paper / dry_run), artifact folders and device choice for the notebooks.

* ``smoke``: CI and a quick check; tiny data and sample counts, recomputed in a temporary folder.
* ``cpu``: the published book on 2 CPU cores; loads the artifacts committed in ``book/artifacts/``.
* ``paper``: the papers' settings, for a GPU.
* ``dry_run``: the ``paper`` profile's architectures and code paths with tiny sizes (one batch
  per training, two images, a tiny N), on CPU, recomputed in a temporary folder. It runs in CI,
  so that a wiring mistake in the ``paper`` profile fails there, not after hours on a GPU.

The temporary folders of ``smoke`` and ``dry_run`` go under ``$RSBOOK_TMP`` when it is set:
a notebook run (:func:`rsbook.book.pipeline.run_notebook`) sets it to a folder it removes when
the run ends, failed or not. Without it (direct Python use) they go into the system's temporary
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

from ..artifacts import ArtifactStore
from ..distributed import broadcast, world
from ..provenance import provenance

__all__ = ["PROFILES", "TEMPORARY_PROFILES", "setup_page", "check_profile", "repo_root", "artifact_store", "temporary_folder", "resolve_device", "provenance_cell"]

PROFILES = ("smoke", "cpu", "paper", "dry_run")
TEMPORARY_PROFILES = ("smoke", "dry_run")  # recompute everything into a temporary folder


def check_profile(profile: str) -> str:
    """Validate a profile name (see the module docstring)."""
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
        return ArtifactStore(broadcast(temporary_folder(f"rsbook-{profile}-{chapter}-") if w.main else None, w))
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


@functools.lru_cache(maxsize=None)
def _temporary_store(chapter: str, profile: str) -> ArtifactStore:
    return artifact_store(chapter, profile)


def chapter_store(chapter: str, profile: str, recompute: bool = False) -> ArtifactStore:
    """:func:`artifact_store`, with one temporary folder per process and chapter for ``smoke`` and
    ``dry_run`` (so that a chapter and the chapters that load its results share it)."""
    if profile in TEMPORARY_PROFILES:
        return _temporary_store(chapter, profile)
    return artifact_store(chapter, profile, recompute=recompute)


def resolve_device(device: str = "auto", profile: str | None = None) -> torch.device:
    """``auto`` -> ``cuda`` if available (``cuda:<LOCAL_RANK>`` under torchrun) else ``cpu`` (always ``cpu`` for
    ``dry_run``); otherwise the named device, checked."""
    if profile == "dry_run" and device == "auto":
        return torch.device("cpu")
    if device == "auto":
        w = world()
        if not (torch.cuda.is_available() and w.distributed):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if w.local_rank >= torch.cuda.device_count():  # under torchrun: this process's GPU, LOCAL_RANK
            raise ValueError(f"torchrun started local rank {w.local_rank} but this machine has {torch.cuda.device_count()} "
                             "GPU(s); use --nproc-per-node at most the number of GPUs")
        return torch.device(f"cuda:{w.local_rank}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available here; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was requested but MPS is not available here; use device='auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
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


def setup_page(profile: str, device: str = "auto", data_root: str = "", threads: int = 0) -> torch.device:
    """What every chapter does after its parameters cell: check ``profile``, use ``data_root`` as the
    data root when given (instead of ``$RSBOOK_DATA``), set torch's CPU ``threads`` when positive,
    set the book's plot style, and return the device (:func:`resolve_device`)."""
    from ..data import set_data_root
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
