"""Dataset-level certification with a resumable per-image log.

The log is a tab-separated file with one row per test image, written and flushed as soon as
the image is certified::

    idx  label  predict  radius  correct  time  noise  sigma

(``predict = -1`` when abstaining; ``time`` in seconds since the previous row; ``noise`` and
``sigma`` the distribution that image was smoothed with; floats at full precision). A
sequential run (:mod:`rsbook.core.sequential`) adds ``samples`` (forward passes of the image,
selection included), ``lower`` (the confidence sequence's lower bound on ``p_A`` at the stop)
and one 0/1 column ``cert_<r>`` per decided radius. Logs
written before the ``noise`` and ``sigma`` columns existed still read (:func:`read_log`).
A killed run keeps every finished row; the next call skips them and continues. Each image
draws its noise from its own generator, seeded by ``(seed, idx)``, so a resumed run gives the
same rows as an uninterrupted one.

Under ``torchrun --nproc-per-node=K`` the same call certifies one shard per process: rank ``r``
takes the images at positions ``r, r + K, ...``, writes its own resumable log beside the run's
log, and rank 0 merges the shards into the log a one-process run writes, ordered as the
dataset, with every shard's provenance (:mod:`rsbook.runs.shards`). Since an image's noise
depends only on ``(seed, idx)``, its row does not depend on how many ranks ran or which one
took it (up to the floating-point differences another batch composition can cause in the
forward pass). A killed rank is resumed by rerunning the same command.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..infra.artifacts import ArtifactStore, atomic_write_text, config_dict, config_key
from ..infra.data import ImageDataset
from ..infra.distributed import barrier, on_rank_zero, shard_positions, world
from ..infra.timing import format_duration
from ..core.certify import Smooth
from ..core.engine import Item, as_noise
from ..core.noise import Noise
from ..core.sequential import Sequential
from .shards import (ShardError, finish_shard, foreign_shards, merge_into, read_shard_run, shard_path, shard_provenance, shard_world,
                     shards_record, start_shard)

__all__ = [
    "CertifyConfig",
    "LOG_COLUMNS",
    "LEGACY_LOG_COLUMNS",
    "SELECTIONS",
    "sequential_columns",
    "certify_dataset",
    "certification_log",
    "log_metadata",
    "merge_certification",
    "clean_classes",
    "read_log",
    "image_generator",
]

LEGACY_LOG_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
LOG_COLUMNS = (*LEGACY_LOG_COLUMNS, "noise", "sigma")
_HEADER = "\t".join(LOG_COLUMNS) + "\n"
_LEGACY_HEADER = "\t".join(LEGACY_LOG_COLUMNS) + "\n"
SELECTIONS = ("noise", "clean")
ETA_PRINT_SECONDS = 60.0  # a run planned to take longer prints its estimate before it starts

NoiseSpec = Noise | tuple[str, float] | float
PerImage = Callable[[int], Any] | Mapping[int, Any]


@dataclass(frozen=True)
class CertifyConfig:
    """What determines a certification log: the model's config, the noise and the sampling.

    ``selection`` is how the class is chosen: ``noise`` (Cohen et al.: ``n0`` separate noisy
    samples) or ``clean`` (the base classifier at the clean input, no selection samples; for
    deterministic models such as HeatSmoothing's). With ``sequential`` set, each image is
    certified by the anytime-valid sequential procedure and ``n`` is its ``n_max``.
    """

    model: Any  # the (frozen dataclass) config of the certified model
    noise: str = "gaussian"
    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    dataset: str = "cifar10"
    every: int = 20  # Cohen's subset: every k-th test image
    seed: int = 0
    precision: str = field(default="fp32", metadata={"key_omits_default": True})  # of the forward pass
    selection: str = field(default="noise", metadata={"key_omits_default": True})
    sequential: Sequential | None = field(default=None, metadata={"key_omits_default": True})  # then n is n_max

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        as_noise((self.noise, self.sigma), where="CertifyConfig")


def image_generator(seed: int, idx: int, device: torch.device | str) -> torch.Generator:
    """The generator for test image ``idx``: seeded by ``(seed, idx)``, on ``device``."""
    return torch.Generator(device).manual_seed((int(seed) << 32) + int(idx))


def sequential_columns(seq: Sequential) -> tuple[str, ...]:
    """The columns a sequential run adds to :data:`LOG_COLUMNS`."""
    return ("samples", "lower", *(f"cert_{r:g}" for r in seq.radii))


def read_log(path: str | Path, noise: str | None = None, sigma: float | None = None) -> pd.DataFrame:
    """Read a certification log (complete rows only).

    A log from before the ``noise`` and ``sigma`` columns gets them filled from ``noise`` and
    ``sigma`` (the run's single noise), or left empty if those are not given.
    """
    df = pd.read_csv(path, sep="\t")
    cols = tuple(df.columns)
    if cols == LEGACY_LOG_COLUMNS:
        df["noise"] = noise
        df["sigma"] = np.nan if sigma is None else float(sigma)
    elif cols[: len(LOG_COLUMNS)] != LOG_COLUMNS or not _sequential_extra(cols[len(LOG_COLUMNS):]):
        raise ValueError(f"{path} is not a certification log: columns {list(df.columns)} != {list(LOG_COLUMNS)} "
                         "(+ a sequential run's samples, lower, cert_<r>...)")
    return df


def _sequential_extra(extra: tuple[str, ...]) -> bool:
    return not extra or (extra[:2] == ("samples", "lower") and all(c.startswith("cert_") for c in extra[2:]))


def _resume_rows(path: Path, legacy_noise: Noise | None, header: str = _HEADER) -> set[int]:
    """Indices already in a partial log; truncates a half-written last line.

    A partial log in the old six-column format is upgraded in place when the run has a
    single noise (the only kind of run that format could hold).
    """
    if not path.exists() or path.stat().st_size == 0:
        path.write_text(header)
        return set()
    raw = path.read_bytes()
    legacy = header == _HEADER and raw.startswith(_LEGACY_HEADER.encode()) and not raw.startswith(_HEADER.encode())
    if not (raw.startswith(header.encode()) or legacy):
        first = raw.split(b"\n", 1)[0].decode(errors="replace")
        raise ValueError(f"{path} is not a log of this run (its header is {first!r}, this run writes "
                         f"{header.strip()!r}); move it away to start over")
    cut = raw.rfind(b"\n") + 1
    if cut < len(raw):  # killed in the middle of a row: drop the fragment
        with open(path, "r+b") as f:
            f.truncate(cut)
    if legacy:
        if legacy_noise is None:
            raise ValueError(f"{path} is a partial log in the old format (no noise column) and this run mixes noises; "
                             "move it away to start over")
        old = read_log(path, legacy_noise.name, legacy_noise.sigma)
        atomic_write_text(path, old.to_csv(sep="\t", index=False, float_format=lambda v: repr(float(v)), lineterminator="\n"))
    done = read_log(path)
    if done["idx"].duplicated().any():
        raise ValueError(f"{path} has duplicated rows; move it away to start over")
    return set(int(i) for i in done["idx"])


def _per_image(spec: Any, idx: int) -> Any:
    if callable(spec):
        return spec(idx)
    if isinstance(spec, Mapping):
        if idx not in spec:
            raise ValueError(f"no entry for image {idx} in the per-image mapping")
        return spec[idx]
    return spec


def certify_dataset(
    smooth: Smooth,
    dataset: ImageDataset,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int | None,
    log_path: str | Path,
    seed: int = 0,
    progress: bool = True,
    noise: NoiseSpec | PerImage | None = None,
    classes: PerImage | None = None,
    sequential: Sequential | None = None,
    run_config: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Certify every image of ``dataset`` into ``log_path``, resuming from rows already there.

    Args:
        noise: the noise of every image (a Noise, ``(name, sigma)`` or a sigma), or a function
            / mapping from an image's index to its noise; ``None`` takes ``smooth``'s.
        classes: a function / mapping from an image's index to a class given in advance
            (deterministic certification, no selection samples); ``None`` selects with ``n0``
            noisy samples.
        sequential: certify each image by the anytime-valid sequential procedure
            (:mod:`rsbook.core.sequential`), with ``n`` as its ``n_max``; the log gets its
            columns (:func:`sequential_columns`).
        run_config: what identifies the run beyond these arguments (the stored config), recorded in
            each shard under torchrun so that the merge refuses another run's shard.

    Under torchrun each rank certifies its shard into ``<stem>.rank<r>-of-<K><suffix>`` beside
    ``log_path`` and rank 0 merges them into ``log_path`` (see the module docstring); every rank
    returns the whole log.

    Images stream through one :class:`~rsbook.core.engine.Engine` (several share a forward
    batch); each row is written and flushed as soon as its image is done, and its ``time``
    is the wall time since the previous row (a sequential run writes rows as images finish,
    so its rows may come out of order; the returned log is in dataset order). A run planned to take longer than a minute
    prints its estimated time first. Returns the complete log, ordered as ``dataset``.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    per_image_noise = callable(noise) or isinstance(noise, Mapping)
    single = None if per_image_noise else smooth.resolve_noise(noise)
    header = _HEADER if sequential is None else "\t".join((*LOG_COLUMNS, *sequential_columns(sequential))) + "\n"
    device = smooth.device
    w = world()
    images = [int(i) for i in dataset.indices]
    foreign = foreign_shards(log_path, w)
    if foreign:
        raise ShardError(f"{log_path.parent} holds shard logs of {log_path.name} that this {w.size}-process run would not merge: "
                         f"{', '.join(p.name for p in foreign)}. Finish that run with its own number of processes "
                         f"(torchrun --nproc-per-node=K, K as in the names) or `rsbook merge {log_path}` once its shards are "
                         "complete, or move them away to start over")
    run: dict[str, Any] = {}
    if w.distributed:
        if log_path.exists() and not shards_record(log_path).exists():
            raise ShardError(f"{log_path} is the partial log of a one-process run; finish it with one process (no torchrun) "
                             "or move it away to certify with several")
        run = json.loads(json.dumps({"config": run_config, "images": images, "n0": n0, "n": n, "alpha": alpha, "seed": seed,
                                     "header": header.strip(), "noise": repr(single) if single is not None else "per image",
                                     "classes": "given" if classes is not None else "selected",
                                     "sequential": repr(sequential)}, sort_keys=True, default=str))
        start_shard(shard_path(log_path, w), run, w, device)
    mine = shard_path(log_path, w)
    done = _resume_rows(mine, single, header)
    todo = [p for p in shard_positions(len(dataset), w) if images[p] not in done]

    def resolved(idx: int) -> Noise:
        return single if single is not None else as_noise(_per_image(noise, idx), where=f"image {idx}, noise")

    used: dict[int, Noise] = {}  # each image's noise, resolved once (a per-image rule may be costly or random)

    def items():
        for i in todo:
            x, label = dataset[i]
            idx = images[i]
            c_a = None if classes is None else int(_per_image(classes, idx))
            used[idx] = resolved(idx)
            yield Item((idx, label), x, image_generator(seed, idx, device), used[idx], c_a=c_a)

    per = n + (n0 if classes is None else 0)
    if todo and sequential is None:
        _print_eta(smooth, tuple(dataset[todo[0]][0].shape), batch_size, len(todo), per)
    what = f"certify {single!r}" if single else "certify"
    bar = tqdm(total=len(todo), desc=f"{what} ({w})" if w.distributed else what, disable=not progress, mininterval=10, unit="img")
    t_start = t_prev = time.perf_counter()
    if sequential is None:
        results = ((key, pred, radius, "") for key, pred, radius in
                   smooth.certify_many(items(), n0, n, alpha, batch_size, planned_images=len(todo)))
    else:
        results = ((c.key, c.prediction, c.radius, _sequential_row(c, n0 if classes is None else 0))
                   for c in smooth.certify_sequential_many(items(), n0, n, alpha, batch_size, sequential, ordered=False))
    drawn = 0
    with open(mine, "a", buffering=1) as f:
        for k, ((idx, label), pred, radius, extra) in enumerate(results, start=1):
            now = time.perf_counter()
            nz = used.pop(idx)
            f.write(f"{idx}\t{label}\t{pred}\t{radius!r}\t{int(pred == label)}\t{now - t_prev!r}\t{nz.name}\t{nz.sigma!r}{extra}\n")
            f.flush()
            os.fsync(f.fileno())
            t_prev = now
            drawn += per if not extra else int(extra.split("\t")[1])
            bar.update(1)
            bar.set_postfix_str(f"{drawn / (now - t_start):,.0f} samples/s", refresh=False)
    bar.close()
    if w.distributed:
        finish_shard(mine, len(done) + len(todo), len(todo), time.perf_counter() - t_start)
        barrier(w)  # every shard complete

        on_rank_zero(lambda: merge_into(log_path, w.size, run, read_log), f"merging the shards of {log_path}", w)
    log = read_log(log_path).set_index("idx").loc[images].reset_index()
    return log


def log_metadata(log: pd.DataFrame) -> dict[str, Any]:
    """A certification log's artifact metadata: images, summed certification seconds, forward passes (sequential)."""
    meta: dict[str, Any] = {"images": len(log), "certify_seconds": float(log["time"].sum())}
    if "samples" in log.columns:
        meta["forward_passes"] = int(log["samples"].sum())
    return meta


def _sequential_row(c, selection: int) -> str:
    """A sequential certificate's extra log fields (each with its leading tab)."""
    return f"\t{c.samples + selection}\t{c.lower!r}" + "".join(f"\t{int(v)}" for v in c.certified)


def _print_eta(smooth: Smooth, shape: tuple[int, ...], batch_size: int | None, images: int, per_image: int) -> None:
    """Print the planned work and its estimated time when it exceeds :data:`ETA_PRINT_SECONDS`.

    The rate is the model's measured forward throughput at the run's batch size (the engine
    certifies at 0.9 or more of it); a cheap upper bound on the rate, so the estimate errs short.
    """
    total = images * per_image
    if total < 50_000:  # certainly quick: do not spend a measurement on it
        return
    bs = smooth.engine.warmup(shape, batch_size, planned=total)
    rate = smooth.engine.throughput(shape, bs, seconds=0.3 if total < 2_000_000 else 1.0)
    eta = total / rate
    if eta >= ETA_PRINT_SECONDS:
        print(f"certifying {images:,} images x {per_image:,} samples = {total:,} forward passes; at about "
              f"{rate:,.0f}/s (the model's measured forward speed at batch {bs}) that takes about {format_duration(eta)}", flush=True)


def clean_classes(smooth: Smooth, dataset: ImageDataset, batch_size: int = 500) -> dict[int, int]:
    """The base classifier's class at each clean image (as the engine evaluates it): the class
    that deterministic certification certifies, chosen without any noise sample."""
    out: dict[int, int] = {}
    with torch.inference_mode():
        for x, _, pos in dataset.batches(batch_size, device=smooth.device, indices=True):
            pred = smooth.engine.forward(x).argmax(1).cpu()
            out.update({int(dataset.indices[i]): int(p) for i, p in zip(pos, pred)})
    return out


def certification_log(
    cfg: CertifyConfig,
    smooth: Smooth,
    dataset: ImageDataset,
    store: ArtifactStore,
    batch_size: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Load the log for ``cfg`` from ``store``, certifying (resumably) first if needed; under torchrun
    every rank certifies its shard and the stored log carries every shard's provenance.

    ``smooth`` is smoothed with ``cfg``'s noise (its own default noise, if any, must agree).
    """
    noise = as_noise((cfg.noise, cfg.sigma), where="CertifyConfig")
    if smooth.noise is not None and smooth.noise != noise:
        raise ValueError(f"the Smooth's noise {smooth.noise!r} does not match the config ({cfg.noise}, sigma={cfg.sigma})")
    if smooth.precision != cfg.precision:
        raise ValueError(f"the Smooth evaluates the model in {smooth.precision} but the config says {cfg.precision}")

    def compute(out: Path, work: Path) -> dict[str, Any]:
        partial = work / "log.partial.tsv"
        classes = clean_classes(smooth, dataset) if cfg.selection == "clean" else None
        log = certify_dataset(smooth, dataset, cfg.n0, cfg.n, cfg.alpha, batch_size, partial, cfg.seed, progress,
                              noise=noise, classes=classes, sequential=cfg.sequential,
                              run_config={"key": config_key(cfg), "config": config_dict(cfg)})
        meta = log_metadata(log)
        w = world()
        if w.main:  # the payload and its shards' provenance are rank 0's to store
            log.to_csv(out, sep="\t", index=False)
        return {**meta, **shard_provenance(partial)}

    path, _ = store.load_or_compute(cfg, compute, "tsv", device=smooth.device, sharded=True)
    return read_log(path, cfg.noise, cfg.sigma)


def merge_certification(path: str | Path) -> tuple[Path, Path | None]:
    """Merge the torchrun shards of a certification log by hand (``rsbook merge``).

    ``path`` is the run's log or the folder holding ``log.partial.tsv`` and its shards (a store's
    ``.work/<key>/`` folder). Writes the merged log there and, when the folder is the work folder
    of a stored certification, also the artifact itself (with every shard's provenance), as rank 0
    does at the end of a torchrun run. Returns ``(merged log, artifact or None)``; raises
    :class:`~rsbook.runs.shards.ShardError` on a missing, duplicate or foreign shard or row.
    """
    path = Path(path)
    log_path = path / "log.partial.tsv" if path.is_dir() else path
    size = shard_world(log_path)
    run = read_shard_run(log_path, size)
    start = time.perf_counter()
    log, records = merge_into(log_path, size, run, read_log)
    work, ident = log_path.parent, run.get("config") or {}
    if work.parent.name != ".work" or not isinstance(ident, dict) or ident.get("key") != work.name:
        return log_path, None
    store = ArtifactStore(work.parent.parent)
    payload = store.root / f"{work.name}.tsv"
    if payload.exists():
        raise FileExistsError(f"{payload} is already stored; delete it and its .json to store the merged log instead")
    tmp = payload.with_name(f".{payload.name}.tmp")
    log.to_csv(tmp, sep="\t", index=False)
    store.adopt(work.name, ident["config"], tmp, "tsv", time.perf_counter() - start, {**log_metadata(log), "shards": records}, "cpu")
    return log_path, payload
