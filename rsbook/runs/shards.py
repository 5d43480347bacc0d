"""Per-rank shards of a per-image log, and their merge into the log a one-process run writes.

Under ``torchrun --nproc-per-node=K`` (:mod:`rsbook.infra.distributed`) rank ``r`` owns the images at
positions ``r, r + K, r + 2K, ...`` of the dataset and writes them to its own resumable log
``<stem>.rank<r>-of-<K><suffix>`` beside the run's log, with a sidecar ``.json`` that records
what run the shard belongs to (the config and the run's sizes, its header and its image list)
and, per session, where and when it ran (host, device, versions, commit). Rank 0 merges the
shards into the run's log, ordered as the dataset, and writes every shard's record to
``<stem>.shards.json``. The merge refuses a shard of another run, a row present twice and an
image present nowhere, with a message naming the shard and the fix.
"""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..infra.artifacts import atomic_write_text
from ..infra.distributed import World, barrier, on_rank_zero, shard_positions, world
from ..infra.provenance import provenance

__all__ = ["ShardError", "shard_path", "shard_sidecar", "shards_record", "foreign_shards", "start_shard", "finish_shard",
           "read_shard_run", "merge_shards", "merge_into", "shard_world", "sharded_table",
           "shard_provenance"]

_RANK_FILE = re.compile(r"^(?P<stem>.+)\.rank(?P<rank>\d+)-of-(?P<size>\d+)$")


FLOAT_FORMAT = {"float_format": lambda v: repr(float(v)), "lineterminator": "\n"}  # to_csv: floats that read back exactly


class ShardError(ValueError):
    """Shards that do not add up to one run's log (another run's shard, a duplicate, a gap)."""


def shard_path(log_path: Path, w: World) -> Path:
    """Rank ``w.rank``'s log: ``log_path`` itself in a one-process world, else ``<stem>.rank<r>-of-<K><suffix>``."""
    if not w.distributed:
        return log_path
    return log_path.with_name(f"{log_path.stem}.rank{w.rank}-of-{w.size}{log_path.suffix}")


def shard_sidecar(path: Path) -> Path:
    """The ``.json`` record beside a shard log."""
    return path.with_suffix(".json")


def shards_record(log_path: Path) -> Path:
    """Where the merge writes every shard's record: ``<stem>.shards.json``."""
    return log_path.with_name(f"{log_path.stem}.shards.json")


def _rank_files(log_path: Path) -> list[tuple[Path, int, int]]:
    out = []
    for p in sorted(log_path.parent.glob(f"{log_path.stem}.rank*-of-*{log_path.suffix}")):
        m = _RANK_FILE.match(p.name[: len(p.name) - len(log_path.suffix)] if log_path.suffix else p.name)
        if m and m["stem"] == log_path.stem:
            out.append((p, int(m["rank"]), int(m["size"])))
    return out


def shard_world(log_path: Path) -> int:
    """The world size of the shard logs beside ``log_path`` (``ShardError`` if none or several)."""
    sizes = sorted({k for _, _, k in _rank_files(log_path)})
    if len(sizes) != 1:
        found = "no shard logs" if not sizes else f"shards of {len(sizes)} world sizes ({', '.join(map(str, sizes))})"
        raise ShardError(f"{log_path.parent} holds {found} of {log_path.name}; a merge needs the shards of exactly one "
                         "torchrun world (move the others away)")
    return sizes[0]


def foreign_shards(log_path: Path, w: World) -> list[Path]:
    """Shard logs beside ``log_path`` that this world would not write or merge: every rank file of
    a one-process run unless ``log_path`` is a finished merge, and rank files of another world size."""
    if not w.distributed:
        return [] if (log_path.exists() and shards_record(log_path).exists()) else [p for p, _, _ in _rank_files(log_path)]
    return [p for p, _, k in _rank_files(log_path) if k != w.size]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def start_shard(path: Path, run: dict[str, Any], w: World, device: Any) -> None:
    """Record that rank ``w.rank`` starts (or resumes) its shard of ``run`` in ``path``'s sidecar.

    Refuses a shard left by another run (``ShardError`` naming the fields that differ) before
    any work is done, so nothing computed is lost.
    """
    side = shard_sidecar(path)
    session = {"started_utc": _now(), "host": socket.gethostname(), "provenance": provenance(device)}
    if side.exists():
        rec = json.loads(side.read_text())
        diff = _differences(rec.get("run", {}), run)
        if diff:
            raise ShardError(f"shard {path.name} in {path.parent} was written by another run (it differs in {', '.join(diff)}); "
                             "move it and its .json away to start this shard over")
        if rec.get("rank") != w.rank or rec.get("world") != w.size:
            raise ShardError(f"shard record {side} says rank {rec.get('rank')} of {rec.get('world')}, not {w}; move it away")
        rec["sessions"].append(session)
    else:
        rec = {"rank": w.rank, "world": w.size, "file": path.name, "run": run, "sessions": [session]}
    atomic_write_text(side, json.dumps(rec, indent=2, sort_keys=True) + "\n")


def finish_shard(path: Path, rows: int, computed: int, seconds: float) -> None:
    """Close the current session of ``path``'s record: when, the rows it ``computed`` (the others were
    resumed), its seconds, and how many rows the shard holds."""
    side = shard_sidecar(path)
    rec = json.loads(side.read_text())
    rec["sessions"][-1].update({"finished_utc": _now(), "computed": computed, "seconds": round(seconds, 3)})
    rec["rows"] = rows
    atomic_write_text(side, json.dumps(rec, indent=2, sort_keys=True) + "\n")


def read_shard_run(log_path: Path, size: int) -> dict[str, Any]:
    """The run recorded by rank 0's shard of a ``size``-process run of ``log_path``."""
    side = shard_sidecar(log_path.with_name(f"{log_path.stem}.rank0-of-{size}{log_path.suffix}"))
    if not side.exists():
        raise ShardError(f"{side} is missing: rank 0 of the {size}-process run never started; rerun the same command")
    return json.loads(side.read_text())["run"]


def merge_shards(log_path: Path, size: int, run: dict[str, Any], read) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The ``size`` shards of ``run`` beside ``log_path`` as one log (rows ordered as ``run['images']``)
    and every shard's record. ``read(path)`` reads one shard log.

    Raises :class:`ShardError` naming the shard for: a missing shard or record, a shard of
    another run, an image in two rows, an image of another image set, an image in no shard.
    """
    images = [int(i) for i in run["images"]]
    frames, records, owner = [], [], {}
    for rank in range(size):
        path = log_path.with_name(f"{log_path.stem}.rank{rank}-of-{size}{log_path.suffix}")
        side = shard_sidecar(path)
        if not path.exists() or not side.exists():
            raise ShardError(f"shard {path.name} (rank {rank} of {size}) is missing from {path.parent}: that rank has not run; "
                             "rerun the same torchrun command to compute it")
        rec = json.loads(side.read_text())
        diff = _differences(rec.get("run", {}), run)
        if diff:
            raise ShardError(f"shard {path.name} belongs to another run (it differs in {', '.join(diff)}); it cannot be merged "
                             f"into {log_path.name}. Move it and its .json away, then rerun the same command")
        df = read(path)
        for idx in df["idx"].astype(int):
            if idx in owner:
                where = "twice in it" if owner[idx] == path.name else f"also in {owner[idx]}"
                raise ShardError(f"shard {path.name} has a row for image {idx}, which is {where}; a merged log holds one row "
                                 "per image. Remove the extra row (or move the shard away and rerun its rank)")
            owner[idx] = path.name
        records.append({k: v for k, v in rec.items() if k != "run"})  # the run is the artifact's config
        if len(df):
            frames.append(df)
    extra = sorted(set(owner) - set(images))
    if extra:
        raise ShardError(f"shard {owner[extra[0]]} has rows for images not in this run's image set (e.g. {extra[:5]}); "
                         "move it away and rerun its rank")
    missing = [(p, i) for p, i in enumerate(images) if i not in owner]
    if missing:
        by_shard: dict[str, list[int]] = {}
        for p, i in missing:
            by_shard.setdefault(f"{log_path.stem}.rank{p % size}-of-{size}{log_path.suffix}", []).append(i)
        detail = "; ".join(f"{name} lacks images {ids[:5]}{' ...' if len(ids) > 5 else ''} ({len(ids)})" for name, ids in by_shard.items())
        raise ShardError(f"the shards of {log_path.name} do not cover every image: {detail}. Rerun the same torchrun command: "
                         "each rank resumes its shard and computes only its missing images")
    log = pd.concat(frames, ignore_index=True).set_index("idx").loc[images].reset_index()
    return log, records


def merge_into(log_path: Path, size: int, run: dict[str, Any], read) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """:func:`merge_shards`, then write the merged log to ``log_path`` (atomically, floats at full
    precision) and the shards' records beside it (:func:`shards_record`)."""
    log, records = merge_shards(log_path, size, run, read)
    atomic_write_text(log_path, log.to_csv(sep="\t", index=False, **FLOAT_FORMAT))
    atomic_write_text(shards_record(log_path), json.dumps(records, indent=2, sort_keys=True) + "\n")
    return log, records


def shard_provenance(log_path: Path) -> dict[str, Any]:
    """``{"shards": [...]}``, the records of the shards merged into ``log_path`` (for an artifact's
    metadata), or ``{}`` when no merge happened here (a one-process run)."""
    record = shards_record(log_path)
    return {"shards": json.loads(record.read_text())} if world().distributed and record.exists() else {}


def sharded_table(log_path: Path, images: list[int], compute: Callable[[list[int]], pd.DataFrame], run: dict[str, Any],
                  device: Any, w: World | None = None) -> pd.DataFrame:
    """A per-image table (one row per image, an ``idx`` column) computed in shards under torchrun.

    ``compute(positions)`` returns the rows of the images at those positions of ``images``. In a
    one-process world it is called once with every position. Under torchrun rank ``r`` computes
    its positions (round-robin) into its shard beside ``log_path`` (written whole, atomically: a
    killed rank recomputes its shard, a finished one is kept), and rank 0 merges the shards into
    ``log_path`` as :func:`merge_shards` does. For computations whose rows do not depend on the
    other images in the run (e.g. per-image attacks with per-image noise). Every rank returns the
    whole table, ordered as ``images``.
    """
    w = w or world()
    if not w.distributed:
        return compute(list(range(len(images))))
    run = json.loads(json.dumps({**run, "images": [int(i) for i in images]}, sort_keys=True, default=str))
    mine = shard_path(log_path, w)
    side = shard_sidecar(mine)
    if not (mine.exists() and side.exists() and "rows" in json.loads(side.read_text())):
        start_shard(mine, run, w, device)
        t = time.perf_counter()
        rows = compute(shard_positions(len(images), w))
        atomic_write_text(mine, rows.to_csv(sep="\t", index=False, **FLOAT_FORMAT))
        finish_shard(mine, len(rows), len(rows), time.perf_counter() - t)
    barrier(w)

    on_rank_zero(lambda: merge_into(log_path, w.size, run, lambda p: pd.read_csv(p, sep="\t")), f"merging the shards of {log_path}", w)
    return pd.read_csv(log_path, sep="\t")

