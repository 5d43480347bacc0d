"""``rsbook bench scaleout``: one certification under ``torchrun`` with 1, 2, ... processes.

Each process count certifies the same images with the same model, noise and N through
:func:`~rsbook.runs.runner.certification_log` (so through the sharding and the merge), launched
by ``python -m torch.distributed.run --standalone --nproc-per-node=K``. The benchmark reports
per K the wall time of the whole launch (process start-up and merge included), each rank's
certification seconds, the speed-up over the first K, and whether the merged log equals the
first K's log in every column but the wall time. ``project`` turns a measured one-process rate
into the expected wall time of a larger run on K devices.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["ScaleoutConfig", "bench_scaleout", "format_scaleout", "project"]

_NOT_TIME = ["idx", "label", "predict", "radius", "correct", "noise", "sigma"]


@dataclass(frozen=True)
class ScaleoutConfig:
    """One certification, run at each process count in ``procs``.

    ``device``: ``cpu``, ``auto`` (each rank its own GPU, ``cuda:<LOCAL_RANK>``) or a fixed device
    (``cuda:0``: every rank shares that GPU, only to exercise the path). ``threads``: torch threads
    per process (0: this machine's cores divided by the process count).
    """

    model: str = "cnn4"
    dataset: str = "cifar10"
    weights: str = "random"
    noise: str = "gaussian"
    sigma: float = 0.25
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    images: int = 20
    device: str = "cpu"
    batch_size: int = 0  # 0: the engine's sweep
    seed: int = 0
    threads: int = 0
    procs: tuple[int, ...] = field(default=(1, 2))


def _threads(cfg: ScaleoutConfig, k: int) -> int:
    return cfg.threads or max(1, (os.cpu_count() or 1) // k)


def _worker(cfg: ScaleoutConfig, store: str) -> None:
    """What each rank runs: certify ``cfg``'s images into ``store`` (sharded under torchrun)."""
    import torch

    from ..infra.artifacts import ArtifactStore
    from .certify import BenchConfig
    from .common import _load_model
    from ..infra.distributed import resolve_device
    from ..core.certify import Smooth
    from ..core.noise import make_noise
    from ..runs.runner import CertifyConfig, certification_log
    from ..infra.data import NUM_CLASSES, ImageDataset, embedded_test_subset

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = resolve_device(cfg.device)
    bench = BenchConfig(model=cfg.model, dataset=cfg.dataset, weights=cfg.weights, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # random weights: the same on every rank
    model = _load_model(bench, device)
    sub = embedded_test_subset(cfg.dataset)
    if cfg.images > len(sub):
        raise ValueError(f"--images {cfg.images}: the embedded {cfg.dataset} subset has {len(sub)} images")
    data = ImageDataset(sub.name, sub.images[: cfg.images], sub.labels[: cfg.images], sub.indices[: cfg.images])
    smooth = Smooth(model, NUM_CLASSES[cfg.dataset], (cfg.noise, cfg.sigma), compile=False)
    ccfg = CertifyConfig(model=bench, noise=make_noise(cfg.noise, cfg.sigma), n0=cfg.n0, n=cfg.n, alpha=cfg.alpha,
                         dataset=cfg.dataset, every=20, seed=cfg.seed)
    certification_log(ccfg, smooth, data, ArtifactStore(store), batch_size=cfg.batch_size or None, progress=False)


def bench_scaleout(cfg: ScaleoutConfig, log=print) -> dict[str, Any]:
    """Run ``cfg`` at each process count; returns ``{"meta", "rows"}`` (see the module docstring)."""
    from ..runs.runner import read_log
    from ..infra.distributed import fresh_launch_env
    from ..infra.provenance import provenance

    rows, first = [], None
    for k in cfg.procs:
        store = tempfile.mkdtemp(prefix=f"rsbook-scaleout-{k}-")
        env = fresh_launch_env()
        env["OMP_NUM_THREADS"] = str(_threads(cfg, k))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={k}", "-m", "rsbook.bench.scaleout",
               json.dumps(asdict(cfg)), store]
        log(f"[scaleout] {k} process(es), {env['OMP_NUM_THREADS']} thread(s) each ...")
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode:
            raise RuntimeError(f"the {k}-process run failed:\n{done.stderr[-4000:]}")
        meta_path = next(p for p in Path(store).glob("certifyconfig-*.json"))
        meta = json.loads(meta_path.read_text())
        logdf = read_log(meta_path.with_suffix(".tsv"))
        first = logdf if first is None else first
        shards = meta.get("shards") or [{"rank": 0, "rows": meta["images"], "sessions": [{"seconds": meta["certify_seconds"]}]}]
        rank_s = [sum(s.get("seconds", 0.0) for s in sh["sessions"]) for sh in shards]
        rows.append({"procs": k, "threads_per_proc": int(env["OMP_NUM_THREADS"]), "wall_s": wall, "rank_certify_s": rank_s,
                     "images": int(meta["images"]), "identical_to_first": bool(logdf[_NOT_TIME].equals(first[_NOT_TIME]))})
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup"] = base / r["wall_s"]
    one = rows[0]
    rate = one["images"] * (cfg.n0 + cfg.n) / max(one["rank_certify_s"]) if one["procs"] == 1 else None
    return {"meta": {"config": asdict(cfg), "provenance": provenance(_device_for_provenance(cfg)), "cpu_count": os.cpu_count(),
                     "one_process_samples_per_s": rate},
            "rows": rows}


def _device_for_provenance(cfg: ScaleoutConfig) -> str:
    return "cpu" if cfg.device == "cpu" else ("cuda:0" if cfg.device == "auto" else cfg.device)


def project(images: int, samples_per_image: int, samples_per_s: float, devices: int) -> float:
    """Expected certification seconds of ``images`` on ``devices`` ranks, each certifying at
    ``samples_per_s`` (a measured one-process rate): the slowest rank has ``ceil(images / devices)``
    images. Start-up and the merge (seconds) are not included."""
    return math.ceil(images / devices) * samples_per_image / samples_per_s


def format_scaleout(result: dict[str, Any]) -> str:
    """The result as a text table."""
    df = pd.DataFrame([{**r, "rank_certify_s": ", ".join(f"{s:.1f}" for s in r["rank_certify_s"])} for r in result["rows"]])
    text = df.to_string(index=False, float_format=lambda v: f"{v:.2f}")
    rate = result["meta"]["one_process_samples_per_s"]
    if rate:
        text += f"\none process certified {rate:,.0f} samples/s (start-up excluded)"
    return text


if __name__ == "__main__":  # a rank of bench_scaleout's torchrun launch
    _worker(ScaleoutConfig(**{k: tuple(v) if k == "procs" else v for k, v in json.loads(sys.argv[1]).items()}), sys.argv[2])
