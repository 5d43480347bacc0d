"""Load-or-compute storage for heavy results, keyed by a frozen config dataclass.

An artifact is a payload file ``<key>.<ext>`` beside ``<key>.json``, which records the
config, rsbook version, git commit, device, wall time and the payload's sha256. ``key`` is
``<config type>-<sha256 of the config's canonical JSON>[:12]``, so a changed setting never
loads a stale result. Writes are atomic (temporary file, then rename); a computation that
is killed keeps its resumable state in ``.work/<key>/`` and continues from it next time.
Processes that share a store compute an artifact once: the first holds a file lock on it while
it computes, the others wait and load it. Loading verifies the hash and refuses a corrupt payload.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from .distributed import barrier, broadcast, check_shared_folder, on_rank_zero, world
from .provenance import provenance

__all__ = ["ArtifactStore", "CorruptArtifactError", "config_key", "config_dict", "sha256_file", "atomic_write_text"]


class CorruptArtifactError(RuntimeError):
    """A stored artifact does not match its recorded hash or cannot be read."""


def config_dict(config: Any) -> dict[str, Any]:
    """The config as a JSON-able dict, with its type name under ``"type"``.

    Nested dataclasses become dicts (as :func:`dataclasses.asdict`). A field declared with
    ``metadata={"config_fields": f}`` is written as the fields ``f(value)`` returns, in its place:
    a config that holds a ``Noise`` object writes it as ``noise: <name>, sigma: <sigma>``, the
    two fields such configs had before, so their keys do not change.
    """
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"an artifact config must be a dataclass instance, got {type(config).__name__}")
    return {"type": type(config).__name__, **_plain(config)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if "config_fields" in f.metadata:
                out.update(f.metadata["config_fields"](v))
            else:
                out[f.name] = _plain(v)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def _omit_defaults(value: Any, d: dict[str, Any], nested: bool = False) -> dict[str, Any]:
    """``d`` (the plain dict of the dataclass ``value``) without its ``key_omits_default`` fields at their
    default. In nested config dataclasses only fields marked ``key_omits_default="nested"`` are left
    out (a field added later to a nested config); the others stay, as they always did in nested
    configs, so no existing key changes."""
    for f in dataclasses.fields(value):  # fields added later keep old keys at their default
        v = getattr(value, f.name)
        mark = f.metadata.get("key_omits_default")
        if mark and (mark == "nested" or not nested) and v == f.default:
            d.pop(f.name, None)
        elif f.name in d and isinstance(d[f.name], dict) and dataclasses.is_dataclass(v) and not isinstance(v, type):
            _omit_defaults(v, d[f.name], nested=True)
    return d


def config_key(config: Any) -> str:
    """``<type>-<12 hex digits>``: a stable name for the config (same fields, same key).

    A field declared with ``metadata={"key_omits_default": True}`` is left out of the key
    while it has its default value, so adding such a field keeps every existing key (in a config
    nested in another, mark it ``"nested"``; see :func:`_omit_defaults`).
    """
    d = _omit_defaults(config, config_dict(config))
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return f"{d['type'].lower()}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tracked_by_git(path: Path) -> bool:
    """Whether ``path`` is committed in the git repository that holds it."""
    import subprocess

    try:
        r = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent, capture_output=True, timeout=10)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class ArtifactStore:
    """A folder of artifacts.

    Args:
        root: the folder (created on first write).
        recompute: ignore stored artifacts and compute them again (their resumable work
            state is discarded too).
    """

    def __init__(self, root: str | Path, recompute: bool = False):
        self.root = Path(root)
        self.recompute = recompute

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r}, recompute={self.recompute})"

    def paths(self, config: Any, ext: str) -> tuple[Path, Path]:
        if ext.lower() == "json":
            raise ValueError("a payload with ext 'json' would overwrite the artifact's metadata file; use e.g. 'result.json'")
        key = config_key(config)
        return self.root / f"{key}.{ext}", self.root / f"{key}.json"

    def work_dir(self, config: Any) -> Path:
        """Where a computation keeps resumable state (checkpoints, partial logs)."""
        return self.root / ".work" / config_key(config)

    def exists(self, config: Any, ext: str) -> bool:
        payload, meta = self.paths(config, ext)
        return payload.exists() and meta.exists()

    def metadata(self, config: Any, ext: str) -> dict[str, Any]:
        """The stored metadata, after verifying the payload against its sha256."""
        payload, meta_path = self.paths(config, ext)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptArtifactError(f"cannot read artifact metadata {meta_path}: {exc}. {self._fix(payload)}") from exc
        if not payload.exists():
            raise CorruptArtifactError(f"artifact {payload} is missing though {meta_path.name} exists. {self._fix(payload)}")
        digest = sha256_file(payload)
        if digest != meta.get("sha256"):
            raise CorruptArtifactError(
                f"artifact {payload} is corrupt: sha256 {digest[:16]}... does not match the recorded "
                f"{str(meta.get('sha256'))[:16]}... {self._fix(payload)}"
            )
        return meta

    @staticmethod
    def _fix(payload: Path) -> str:
        return ArtifactStore.fix_hint(payload)

    @staticmethod
    def fix_hint(payload: Path) -> str:
        """How to repair a bad artifact: restore it from git if it is committed, else recompute it."""
        meta = payload.with_name(payload.name.split(".", 1)[0] + ".json")
        if _tracked_by_git(payload):
            return (f"It is a committed artifact: restore it with `git checkout -- {payload} {meta}` "
                    "(recomputing it can take hours).")
        return f"Delete {payload.name} and its .json (or pass recompute=True) to compute it again."

    def load_or_compute(
        self,
        config: Any,
        compute: Callable[[Path, Path], dict[str, Any] | None],
        ext: str,
        device: torch.device | str | None = None,
        sharded: bool = False,
    ) -> tuple[Path, dict[str, Any]]:
        """Return ``(payload path, metadata)``, computing the artifact first if needed.

        ``compute(out_path, work_dir)`` writes the payload to ``out_path`` (a temporary name)
        and may keep resumable state in ``work_dir``; it may return extra metadata. The
        payload is moved into place only after it is complete.

        Under ``torchrun`` (:mod:`rsbook.infra.distributed`) every rank takes rank 0's view of whether
        the artifact exists; a missing one is computed by rank 0 alone while the others wait
        (``sharded=False``), or by every rank (``sharded=True``: ``compute`` splits the work and
        writes the payload on rank 0), and every rank then loads what rank 0 stored.
        """
        payload, meta_path = self.paths(config, ext)
        w = world()
        if w.distributed:
            return self._load_or_compute_distributed(config, compute, ext, device, sharded, w)
        if not self.recompute and payload.exists() and meta_path.exists():
            return payload, self.metadata(config, ext)
        with self._computing(config, ext):
            # another process may have stored it while this one waited for the lock
            if not self.recompute and payload.exists() and meta_path.exists():
                return payload, self.metadata(config, ext)
            work = self.work_dir(config)
            if self.recompute:
                shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, exist_ok=True)
            tmp = payload.with_name(f".{payload.name}.tmp")
            start = time.perf_counter()
            extra = compute(tmp, work) or {}
            return payload, self.adopt(config_key(config), config_dict(config), tmp, ext, time.perf_counter() - start, extra, device)

    @contextmanager
    def _computing(self, config: Any, ext: str):
        """Hold an exclusive lock on ``(config, ext)`` in this store while it is computed, so that
        processes sharing the store (chapters of one book build) compute it once: the others wait,
        then load it. An OS file lock (``fcntl.flock``): released by the OS if the process dies.
        Without ``fcntl`` (Windows) nothing is locked."""
        lock_dir = self.root / ".work"
        lock_dir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover -- not on POSIX
            yield
            return
        with open(lock_dir / f"{config_key(config)}.{ext}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _load_or_compute_distributed(self, config, compute, ext, device, sharded, w) -> tuple[Path, dict[str, Any]]:
        payload, meta_path = self.paths(config, ext)
        if broadcast(payload.exists() and meta_path.exists() and not self.recompute, w):
            return payload, self.metadata(config, ext)
        check_shared_folder(self.root, w)
        work = self.work_dir(config)
        if self.recompute:
            on_rank_zero(lambda: shutil.rmtree(work, ignore_errors=True), f"clearing {work}", w)
        work.mkdir(parents=True, exist_ok=True)
        tmp = payload.with_name(f".{payload.name}.tmp")
        start = time.perf_counter()
        key = config_key(config)
        if sharded:
            extra = compute(tmp, work) or {}
            barrier(w)  # every rank is done with the work folder before rank 0 stores the payload and removes it
            on_rank_zero(lambda: self.adopt(key, config_dict(config), tmp, ext, time.perf_counter() - start, extra, device),
                         f"storing {key}", w)
        else:
            def alone() -> None:
                extra = compute(tmp, work) or {}
                self.adopt(key, config_dict(config), tmp, ext, time.perf_counter() - start, extra, device)

            on_rank_zero(alone, f"computing {key}", w)
        return payload, self.metadata(config, ext)

    def adopt(self, key: str, config: dict[str, Any], tmp: Path, ext: str, wall: float, extra: dict[str, Any],
              device: torch.device | str | None = None) -> dict[str, Any]:
        """Store the complete payload ``tmp`` as artifact ``key`` (``config`` its :func:`config_dict`), with its
        metadata, and drop the artifact's work folder. Returns the metadata."""
        payload, meta_path = self.root / f"{key}.{ext}", self.root / f"{key}.json"
        if not tmp.exists():
            raise RuntimeError(f"compute for {key} did not write its payload")
        meta = {
            "key": key,
            "config": config,
            "file": payload.name,
            "sha256": sha256_file(tmp),
            "bytes": tmp.stat().st_size,
            "wall_time_s": round(wall, 3),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "provenance": provenance(device),
            **extra,
        }
        os.replace(tmp, payload)
        atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(self.root / ".work" / key, ignore_errors=True)
        return meta

    def load_tensors(self, config: Any, ext: str = "pt", map_location: str | torch.device = "cpu") -> Any:
        """Load a verified ``torch.save`` payload with ``weights_only=True``."""
        payload, _ = self.paths(config, ext)
        self.metadata(config, ext)
        try:
            return torch.load(payload, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise CorruptArtifactError(f"cannot load {payload}: {exc}. {self._fix(payload)}") from exc


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename (a killed write leaves the old file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
