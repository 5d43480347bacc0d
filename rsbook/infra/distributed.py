"""Running under PyTorch's launcher: ``torchrun --nproc-per-node=K`` (one process per GPU).

Rank and world size come from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); across machines torchrun's usual
rendezvous applies. Without them (a plain ``python`` or a notebook) the world is one process
and nothing here talks to anyone.

The processes only coordinate: barriers, and small objects broadcast from rank 0 (decisions and
error messages). Results travel through files, so the artifact folders must be on a filesystem
every rank sees (one machine, or a cluster's shared filesystem); :func:`check_shared_folder`
says so with the fix when they are not. The coordination group is a CPU (gloo) group created
lazily, with a long timeout, since one rank may wait hours while rank 0 trains a model.
Hand-written because ``torch.distributed`` gives the primitives but no "rank 0 computes, the
others wait and load" pattern for file artifacts.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

__all__ = ["World", "world", "fresh_launch_env", "shard_positions", "barrier", "broadcast", "all_gather", "on_rank_zero", "check_shared_folder",
           "WAIT_TIMEOUT"]

WAIT_TIMEOUT = timedelta(days=7)  # how long a rank may wait for another (rank 0 training a model, a slow shard)
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT")
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the launched processes: ``rank`` of ``size``; ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"


def world() -> World:
    """The world torchrun launched this process into (``World()``, one process, without torchrun).

    While rank 0 computes something alone (:func:`on_rank_zero`), it is a one-process world for
    everything that computation calls (e.g. loading the base model of a fine-tuning), so that
    nested stores do not wait for ranks that are not there. Raises ``ValueError`` naming the
    variable when the environment is inconsistent (e.g. ``RANK`` set by hand without ``WORLD_SIZE``).
    """
    w = _launched()
    return World(0, 1, w.local_rank) if _SOLO else w


_SOLO = 0  # > 0 while rank 0 runs a computation alone


def _launched() -> World:
    env = {k: os.environ.get(k) for k in _ENV}
    if env["WORLD_SIZE"] is None and env["RANK"] is None:
        return World()
    try:
        size = int(env["WORLD_SIZE"] or "")
        rank = int(env["RANK"] or "")
        local = int(env["LOCAL_RANK"] or rank)
    except ValueError:
        raise ValueError(f"RANK={env['RANK']!r}, WORLD_SIZE={env['WORLD_SIZE']!r}, LOCAL_RANK={env['LOCAL_RANK']!r} are not a "
                         "torchrun environment (integers, set together); launch with `torchrun --nproc-per-node=K ...` "
                         "or unset them") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={size} is not a valid rank/world size; launch with torchrun or unset them")
    if size > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise ValueError(f"WORLD_SIZE={size} but MASTER_ADDR/MASTER_PORT are not set: launch the processes with "
                         "`torchrun --nproc-per-node=K ...` (it sets them)")
    return World(rank, size, local)


def fresh_launch_env() -> dict[str, str]:
    """This process's environment without the rank and rendezvous variables, for starting a new,
    independent ``torchrun`` from it (a benchmark or a test), even from inside a torchrun rank."""
    return {k: v for k, v in os.environ.items() if k not in (*_ENV, *_RENDEZVOUS)}


def shard_positions(count: int, w: World) -> list[int]:
    """The positions ``0..count-1`` rank ``w.rank`` owns: every ``w.size``-th, starting at its rank.

    Round-robin by position, so every rank knows its images without communication and hard
    and easy images spread evenly; each position belongs to exactly one rank.
    """
    return list(range(w.rank, count, w.size))


def _group():
    """The gloo group used for coordination (created on first use; reuses the default group if it is gloo)."""
    import torch.distributed as dist

    global _GROUP
    if _GROUP is None:
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=WAIT_TIMEOUT)
            _GROUP = dist.group.WORLD
        elif dist.get_backend() == "gloo":
            _GROUP = dist.group.WORLD
        else:
            _GROUP = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return _GROUP


_GROUP = None


def barrier(w: World | None = None) -> None:
    """Wait until every rank gets here (nothing to do in a one-process world)."""
    w = w or world()
    if w.distributed:
        import torch.distributed as dist

        dist.barrier(group=_group())


def broadcast(obj: T, w: World | None = None) -> T:
    """Rank 0's ``obj`` on every rank (a picklable object)."""
    w = w or world()
    if not w.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_group())
    return box[0]


def all_gather(obj: T, w: World | None = None) -> list[T]:
    """Every rank's ``obj``, in rank order."""
    w = w or world()
    if not w.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj, group=_group())
    return out


def on_rank_zero(fn: Callable[[], T], what: str, w: World | None = None) -> T | None:
    """Run ``fn`` on rank 0 only, then release every rank; a failure on rank 0 is raised on every rank.

    Returns ``fn()``'s result on rank 0 and ``None`` elsewhere.
    """
    global _SOLO
    w = w or world()
    if not w.distributed:
        return fn()
    result, error = None, None
    if w.main:
        _SOLO += 1
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 -- re-raised below, after telling the other ranks
            error = f"{type(exc).__name__}: {exc}"
            _SOLO -= 1
            broadcast(error, w)
            raise
        _SOLO -= 1
    error = broadcast(error, w)
    if error is not None:
        raise RuntimeError(f"rank 0 failed while {what}: {error}")
    return result


_CHECKED: set[str] = set()


def check_shared_folder(folder: str | Path, w: World | None = None) -> None:
    """Make sure every rank sees the same ``folder`` (results travel through files).

    Rank 0 writes a token file there; every rank looks for it. Raises ``RuntimeError`` on every
    rank, naming the ranks and hosts that cannot see it and the fix, when the folder is not shared.
    """
    w = w or world()
    folder = Path(folder)
    if not w.distributed or str(folder.resolve()) in _CHECKED:
        return
    token_name = broadcast(f".rank-check-{uuid.uuid4().hex}" if w.main else None, w)
    token = folder / token_name
    if w.main:
        folder.mkdir(parents=True, exist_ok=True)
        token.write_text(socket.gethostname())
    barrier(w)
    seen = all_gather((token.exists(), socket.gethostname()), w)
    barrier(w)
    if w.main:
        token.unlink(missing_ok=True)
    blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(seen) if not ok]
    if blind:
        raise RuntimeError(f"the artifact folder {folder} is not shared between the ranks: {', '.join(blind)} cannot see "
                           f"what rank 0 on {seen[0][1]} writes there. Put the artifacts on a filesystem every machine "
                           "mounts (set RSBOOK_ARTIFACTS=/shared/path) and rerun")
    _CHECKED.add(str(folder.resolve()))


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
