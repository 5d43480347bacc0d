"""Dataset-level certification with a resumable per-image log.

The log is a tab-separated file with one row per test image, written and flushed as soon as
the image is certified::

    idx  label  predict  radius  correct  time

(``predict = -1`` when abstaining; ``time`` in seconds; floats at full precision). A killed
run keeps every finished row; the next call skips them and continues. Each image draws its
noise from its own generator, seeded by ``(seed, idx)``, so a resumed run gives the same
rows as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import ArtifactStore
from .certify import Smooth
from .data import ImageDataset

__all__ = ["CertifyConfig", "LOG_COLUMNS", "certify_dataset", "certification_log", "read_log", "image_generator"]

LOG_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
_HEADER = "\t".join(LOG_COLUMNS) + "\n"


@dataclass(frozen=True)
class CertifyConfig:
    """What determines a certification log: the model's config, the noise and the sampling."""

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


def image_generator(seed: int, idx: int, device: torch.device | str) -> torch.Generator:
    """The generator for test image ``idx``: seeded by ``(seed, idx)``, on ``device``."""
    return torch.Generator(device).manual_seed((int(seed) << 32) + int(idx))


def read_log(path: str | Path) -> pd.DataFrame:
    """Read a certification log (complete rows only)."""
    df = pd.read_csv(path, sep="\t")
    if tuple(df.columns) != LOG_COLUMNS:
        raise ValueError(f"{path} is not a certification log: columns {list(df.columns)} != {list(LOG_COLUMNS)}")
    return df


def _resume_rows(path: Path) -> set[int]:
    """Indices already in a partial log; truncates a half-written last line."""
    if not path.exists() or path.stat().st_size == 0:
        path.write_text(_HEADER)
        return set()
    raw = path.read_bytes()
    if not raw.startswith(_HEADER.encode()):
        raise ValueError(f"{path} is not a certification log (bad header); delete it to start over")
    cut = raw.rfind(b"\n") + 1
    if cut < len(raw):  # killed in the middle of a row: drop the fragment
        with open(path, "r+b") as f:
            f.truncate(cut)
    done = read_log(path)
    if done["idx"].duplicated().any():
        raise ValueError(f"{path} has duplicated rows; delete it to start over")
    return set(int(i) for i in done["idx"])


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
) -> pd.DataFrame:
    """Certify every image of ``dataset`` into ``log_path``, resuming from rows already there.

    Images stream through one :class:`~rsbook.engine.Engine` (several share a forward batch);
    each row is written and flushed as soon as its image is done, and its ``time`` is the wall
    time since the previous row. Returns the complete log, ordered as ``dataset``.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    done = _resume_rows(log_path)
    todo = [i for i in range(len(dataset)) if int(dataset.indices[i]) not in done]
    device = smooth.device

    def items():
        for i in todo:
            x, label = dataset[i]
            idx = int(dataset.indices[i])
            yield (idx, label), x, image_generator(seed, idx, device)

    bar = tqdm(total=len(todo), desc=f"certify {smooth.noise!r}", disable=not progress, mininterval=10, unit="img")
    t_start = t_prev = time.perf_counter()
    with open(log_path, "a", buffering=1) as f:
        for k, ((idx, label), pred, radius) in enumerate(
            smooth.certify_many(items(), n0, n, alpha, batch_size, planned_images=len(todo)), start=1
        ):
            now = time.perf_counter()
            f.write(f"{idx}\t{label}\t{pred}\t{radius!r}\t{int(pred == label)}\t{now - t_prev!r}\n")
            f.flush()
            os.fsync(f.fileno())
            t_prev = now
            bar.update(1)
            bar.set_postfix_str(f"{k * (n0 + n) / (now - t_start):,.0f} samples/s", refresh=False)
    bar.close()
    log = read_log(log_path).set_index("idx").loc[[int(i) for i in dataset.indices]].reset_index()
    return log


def certification_log(
    cfg: CertifyConfig,
    smooth: Smooth,
    dataset: ImageDataset,
    store: ArtifactStore,
    batch_size: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Load the log for ``cfg`` from ``store``, certifying (resumably) first if needed."""
    if abs(smooth.sigma - cfg.sigma) > 1e-12 or smooth.noise.name != cfg.noise:
        raise ValueError(f"the Smooth's noise {smooth.noise!r} does not match the config ({cfg.noise}, sigma={cfg.sigma})")
    if smooth.precision != cfg.precision:
        raise ValueError(f"the Smooth evaluates the model in {smooth.precision} but the config says {cfg.precision}")

    def compute(out: Path, work: Path) -> dict[str, Any]:
        partial = work / "log.partial.tsv"
        log = certify_dataset(smooth, dataset, cfg.n0, cfg.n, cfg.alpha, batch_size, partial, cfg.seed, progress)
        log.to_csv(out, sep="\t", index=False)
        return {"images": len(log), "certify_seconds": float(log["time"].sum())}

    path, _ = store.load_or_compute(cfg, compute, "tsv", device=smooth.device)
    return read_log(path)
