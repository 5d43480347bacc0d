"""Dataset-level certification with a resumable per-image log.

The log is a tab-separated file with one row per test image, written and flushed as soon as
the image is certified::

    idx  label  predict  radius  correct  time  noise  sigma

(``predict = -1`` when abstaining; ``time`` in seconds since the previous row; ``noise`` and
``sigma`` the distribution that image was smoothed with, from its certificate; floats at full
precision). Each certifier declares the columns it adds after these (a :class:`LogSchema`): a
sequential run (:mod:`rsbook.core.sequential`) adds ``samples`` (forward passes of the image,
selection included), ``lower`` (the confidence sequence's lower bound on ``p_A`` at the stop)
and one 0/1 column ``cert_<r>`` per decided radius. Logs written before the ``noise`` and
``sigma`` columns existed still read (:func:`read_log`).

The noise may differ from image to image: a :class:`CertifyConfig` with a ``noise_rule`` (a
:class:`NoiseTable`, or any frozen config with ``noise_for(idx, x)``, such as a stored selector)
gives each image its noise; the rule is part of the config's key.

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

import dataclasses
import functools
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
from ..core.certificate import Certificate
from ..core.certify import Smooth
from ..core.engine import Item, as_noise
from ..core.noise import Gaussian, Noise, make_noise
from ..core.sequential import Sequential
from ..core.streams import image_generator
from .shards import (ShardError, finish_shard, foreign_shards, merge_into, read_shard_run, shard_path, shard_provenance, shard_world,
                     shards_record, start_shard)

__all__ = [
    "CertifyConfig",
    "NoiseTable",
    "NOISE_FIELD",
    "LogSchema",
    "log_schema",
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
]

LEGACY_LOG_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
LOG_COLUMNS = (*LEGACY_LOG_COLUMNS, "noise", "sigma")
_HEADER = "\t".join(LOG_COLUMNS) + "\n"
_LEGACY_HEADER = "\t".join(LEGACY_LOG_COLUMNS) + "\n"
SELECTIONS = ("noise", "clean")
ETA_PRINT_SECONDS = 60.0  # a run planned to take longer prints its estimate before it starts

NoiseSpec = Noise | tuple[str, float] | float
PerImage = Callable[[int], Any] | Mapping[int, Any]


def _noise_fields(noise: Noise | None) -> dict[str, Any]:
    """How a config stores its noise: ``noise: <name>, sigma: <sigma>`` (the fields configs held
    before they held a :class:`~rsbook.core.noise.Noise`, so every stored key stays)."""
    return {"noise": None, "sigma": None} if noise is None else {"noise": noise.name, "sigma": noise.sigma}


def _rule_fields(rule: Any) -> dict[str, Any]:
    """How a config stores its per-image noise rule: nothing at all without one (so neither a stored
    key nor a config nesting a CertifyConfig changes), else its type and fields."""
    if rule is None:
        return {}
    return {"noise_rule": config_dict(rule)} if dataclasses.is_dataclass(rule) else {"noise_rule": repr(rule)}


#: The metadata of a config field that holds a Noise (see :func:`rsbook.infra.artifacts.config_dict`).
NOISE_FIELD = {"config_fields": _noise_fields}


@dataclass(frozen=True)
class NoiseTable:
    """A noise per image, fixed in advance: image ``idx`` is smoothed with ``family`` at ``sigmas[idx]``.

    ``sigmas`` is a tuple of ``(idx, sigma)`` pairs (hashable, so it is part of a config's key).
    A table chosen by looking at the images' *noise draws* would void the certificates; one chosen
    from other data (a selector's output, a training run's allocation) keeps them valid per image.
    """

    family: str
    sigmas: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        idx = [int(i) for i, _ in self.sigmas]
        if len(set(idx)) != len(idx):
            raise ValueError("NoiseTable: an image appears twice")
        for _, s in self.sigmas:
            make_noise(self.family, s)  # validates the family and every sigma

    @classmethod
    def of(cls, noises: Mapping[int, Noise]) -> "NoiseTable":
        """A table from ``{idx: Noise}`` (one family)."""
        families = {n.name for n in noises.values()}
        if len(families) != 1:
            raise ValueError(f"a NoiseTable holds one noise family, got {sorted(families)}")
        return cls(families.pop(), tuple(sorted((int(i), float(n.sigma)) for i, n in noises.items())))

    @functools.cached_property
    def _table(self) -> dict[int, float]:  # built once per table, not once per image
        return dict(self.sigmas)

    def noise_for(self, idx: int, x: torch.Tensor | None = None) -> Noise:
        """Image ``idx``'s noise (``x`` is not read: the table was fixed in advance)."""
        if idx not in self._table:
            raise ValueError(f"the noise table has no entry for image {idx}; it covers {len(self._table)} images")
        return make_noise(self.family, self._table[idx])


@dataclass(frozen=True)
class CertifyConfig:
    """What determines a certification log: the model's config, the noise and the sampling.

    ``noise`` smooths every image; ``noise=None`` with a ``noise_rule`` gives each image its own
    (:class:`NoiseTable`, or a frozen config with ``noise_for(idx, x) -> Noise``; see the module
    docstring). ``selection`` is how the class is chosen: ``noise`` (Cohen et al.: ``n0`` separate
    noisy samples) or ``clean`` (the base classifier at the clean input, no selection samples; for
    deterministic models such as HeatSmoothing's). With ``sequential`` set, each image is
    certified by the anytime-valid sequential procedure and ``n`` is its ``n_max``.
    """

    model: Any  # the (frozen dataclass) config of the certified model
    noise: Noise | None = field(default=Gaussian(0.25), metadata=NOISE_FIELD)
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    dataset: str = "cifar10"
    every: int = 20  # Cohen's subset: every k-th test image
    seed: int = 0
    precision: str = field(default="fp32", metadata={"key_omits_default": True})  # of the forward pass
    selection: str = field(default="noise", metadata={"key_omits_default": True})
    sequential: Sequential | None = field(default=None, metadata={"key_omits_default": True})  # then n is n_max
    noise_rule: Any = field(default=None, metadata={"config_fields": _rule_fields})  # a noise per image (then noise=None)

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        for name in ("n0", "n", "every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"CertifyConfig.{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise ValueError(f"CertifyConfig.alpha must lie in (0, 1) (e.g. 0.001), got {self.alpha!r}")
        if (self.noise is None) == (self.noise_rule is None):
            raise ValueError("CertifyConfig: give either noise (one for every image) or noise_rule (one per image), not both "
                             f"or neither; got noise={self.noise!r}, noise_rule={type(self.noise_rule).__name__}")
        if self.noise is not None and not isinstance(self.noise, Noise):
            raise TypeError(f"CertifyConfig.noise must be a Noise (e.g. Gaussian(0.25)), got {self.noise!r}")
        if self.noise_rule is not None and not callable(getattr(self.noise_rule, "noise_for", None)):
            raise TypeError(f"CertifyConfig.noise_rule must have noise_for(idx, x), got {type(self.noise_rule).__name__}")

    @property
    def sigma(self) -> float:
        """The noise's sigma (a config with a per-image rule has none)."""
        if self.noise is None:
            raise AttributeError("this CertifyConfig gives each image its own noise (noise_rule); it has no single sigma")
        return self.noise.sigma


@dataclass(frozen=True)
class LogSchema:
    """The columns a certifier writes after :data:`LOG_COLUMNS`, and how a certificate fills them.

    ``name`` says which certifier (``fixed``: CERTIFY or class-given, no extra columns;
    ``sequential``: ``samples``, ``lower``, ``cert_<r>``...).
    """

    name: str
    columns: tuple[str, ...] = ()

    @property
    def header(self) -> str:
        return "\t".join((*LOG_COLUMNS, *self.columns)) + "\n"

    def fields(self, cert: Certificate) -> str:
        """The extra fields of ``cert``'s row, each with its leading tab."""
        if self.name == "fixed":
            return ""
        return f"\t{cert.samples}\t{cert.p_lower!r}" + "".join(f"\t{int(v)}" for v in cert.certified)

    @staticmethod
    def accepts(extra: tuple[str, ...]) -> bool:
        """Whether ``extra`` are the columns some certifier declares (so :func:`read_log` reads the log)."""
        return not extra or (extra[:2] == ("samples", "lower") and all(c.startswith("cert_") for c in extra[2:]))


def log_schema(sequential: Sequential | None = None) -> LogSchema:
    """The schema of fixed-N certification (``sequential=None``) or of the sequential certifier."""
    return LogSchema("fixed") if sequential is None else LogSchema("sequential", sequential_columns(sequential))


def sequential_columns(seq: Sequential) -> tuple[str, ...]:
    """The columns a sequential run adds to :data:`LOG_COLUMNS`."""
    return ("samples", "lower", *(f"cert_{r:g}" for r in seq.radii))


def read_log(path: str | Path, noise: Noise | None = None) -> pd.DataFrame:
    """Read a certification log (complete rows only).

    A log from before the ``noise`` and ``sigma`` columns gets them filled from ``noise`` (the
    run's single noise), or left empty if it is not given.
    """
    df = pd.read_csv(path, sep="\t")
    cols = tuple(df.columns)
    if cols == LEGACY_LOG_COLUMNS:
        df["noise"] = None if noise is None else noise.name
        df["sigma"] = np.nan if noise is None else float(noise.sigma)
    elif cols[: len(LOG_COLUMNS)] != LOG_COLUMNS or not LogSchema.accepts(cols[len(LOG_COLUMNS):]):
        raise ValueError(f"{path} is not a certification log: columns {list(df.columns)} != {list(LOG_COLUMNS)} "
                         "(+ the columns a certifier declares: a sequential run's samples, lower, cert_<r>...)")
    return df


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
        old = read_log(path, legacy_noise)
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
    noise: NoiseSpec | PerImage | Any | None = None,
    classes: PerImage | None = None,
    sequential: Sequential | None = None,
    run_config: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Certify every image of ``dataset`` into ``log_path``, resuming from rows already there.

    Args:
        noise: the noise of every image (a Noise, ``(name, sigma)`` or a sigma), or a function
            / mapping from an image's index to its noise, or a rule with ``noise_for(idx, x)``
            (:class:`NoiseTable`, a stored selector); ``None`` takes ``smooth``'s.
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
    rule = callable(getattr(noise, "noise_for", None))  # a NoiseTable, a stored selector
    per_image_noise = rule or callable(noise) or isinstance(noise, Mapping)
    single = None if per_image_noise else smooth.resolve_noise(noise)
    schema = log_schema(sequential)
    header = schema.header
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

    def resolved(idx: int, x: torch.Tensor) -> Noise:
        if single is not None:
            return single
        spec = noise.noise_for(idx, x) if rule else _per_image(noise, idx)
        return as_noise(spec, where=f"image {idx}, noise")

    def items():
        for i in todo:
            x, label = dataset[i]
            idx = images[i]
            c_a = None if classes is None else int(_per_image(classes, idx))
            yield Item((idx, label), x, image_generator(seed, idx, device), resolved(idx, x), c_a=c_a)

    per = n + (n0 if classes is None else 0)
    if todo and sequential is None:
        _print_eta(smooth, tuple(dataset[todo[0]][0].shape), batch_size, len(todo), per)
    what = f"certify {single!r}" if single else "certify"
    bar = tqdm(total=len(todo), desc=f"{what} ({w})" if w.distributed else what, disable=not progress, mininterval=10, unit="img")
    t_start = t_prev = time.perf_counter()
    if sequential is None:
        results = smooth.certify_many(items(), n0, n, alpha, batch_size, planned_images=len(todo))
    else:
        results = smooth.certify_sequential_many(items(), n0, n, alpha, batch_size, sequential, ordered=False)
    drawn = 0
    with open(mine, "a", buffering=1) as f:
        for cert in results:
            now = time.perf_counter()
            (idx, label), pred, nz = cert.key, cert.prediction, cert.noise
            f.write(f"{idx}\t{label}\t{pred}\t{cert.radius!r}\t{int(pred == label)}\t{now - t_prev!r}\t{nz.name}\t{nz.sigma!r}"
                    f"{schema.fields(cert)}\n")
            f.flush()
            os.fsync(f.fileno())
            t_prev = now
            drawn += cert.samples
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
    rule: Any = None,
) -> pd.DataFrame:
    """Load the log for ``cfg`` from ``store``, certifying (resumably) first if needed; under torchrun
    every rank certifies its shard and the stored log carries every shard's provenance.

    ``smooth`` is smoothed with ``cfg``'s noise (its own default noise, if any, must agree), or with
    each image's noise from ``cfg.noise_rule``; ``rule`` is that rule ready to run when the config
    holds only its description (a stored selector that must be loaded first): it must equal
    ``cfg.noise_rule`` or have it as its ``config``.
    """
    noise: Any = cfg.noise
    if cfg.noise_rule is not None:
        noise = cfg.noise_rule if rule is None else rule
        if rule is not None and not (rule == cfg.noise_rule or getattr(rule, "config", None) == cfg.noise_rule):
            raise ValueError("the rule given does not match the config's noise_rule; pass the rule the config describes")
    elif rule is not None:
        raise ValueError("a rule was given but the config has a single noise (noise_rule=None)")
    if smooth.noise is not None and cfg.noise is not None and smooth.noise != cfg.noise:
        raise ValueError(f"the Smooth's noise {smooth.noise!r} does not match the config's {cfg.noise!r}")
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
    return read_log(path, cfg.noise)


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
