"""``rsbook bench sequential``: the sequential certifier against fixed-N ``certify_many`` with
``N = n_max``, on the same images, one model and one engine, in one run."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..core.certify import Smooth
from ..core.engine import Item
from ..core.streams import image_generator
from ..core.sequential import Sequential
from ..infra.data import NUM_CLASSES
from ..infra.provenance import cpu_features, provenance
from .certify import BenchConfig
from .common import _images, _load_model
from .load import LoadMonitor, contention

__all__ = ["bench_sequential", "format_sequential"]


def bench_sequential(cfg: BenchConfig, radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5), log=print) -> dict[str, Any]:
    """Fixed-N ``Smooth.certify_many`` (``N = cfg.n``) and the sequential certifier with
    ``n_max = cfg.n``, on the same images, one model and one engine, in one run.

    Reports forward passes per image (selection included), wall time, and at each radius the
    certified accuracy of both and the share of images on which they decide alike.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    noises = [cfg.noise_of(i) for i in range(cfg.images)]
    xs, idxs = _images(cfg)
    from ..infra.data import embedded_test_subset

    labels = [int(embedded_test_subset(cfg.dataset)[i][1]) for i in range(cfg.images)]
    K = NUM_CLASSES[cfg.dataset]
    smooth = Smooth(_load_model(cfg, device), K, noises[0], precision=cfg.precision,
                    compile={"auto": None, "on": True, "off": False}[cfg.compile])
    seq = Sequential(radii=radii)
    bs = smooth.engine.warmup(tuple(xs.shape[1:]), cfg.batch_size or None, planned=500 * (cfg.n0 + cfg.n))

    def items():
        return [Item(idx, x, image_generator(cfg.seed, idx, device), noise) for x, idx, noise in zip(xs, idxs, noises)]

    with LoadMonitor() as monitor:
        log(f"[bench] fixed N = {cfg.n:,}: {cfg.images} images ...")
        t0 = time.perf_counter()
        fixed = [c.pair() for c in smooth.certify_many(items(), cfg.n0, cfg.n, cfg.alpha, bs)]
        t_fixed = time.perf_counter() - t0
        log(f"[bench] sequential, n_max = {cfg.n:,} ...")
        t0 = time.perf_counter()
        sequential = list(smooth.certify_sequential_many(items(), cfg.n0, cfg.n, cfg.alpha, bs, seq))
        t_seq = time.perf_counter() - t0
    seq_passes = float(np.mean([c.estimation for c in sequential])) + cfg.n0
    rows = [
        dict(method=f"fixed N = {cfg.n:,}", forward_passes_per_image=float(cfg.n0 + cfg.n), seconds_per_image=t_fixed / cfg.images),
        dict(method=f"sequential, n_max = {cfg.n:,}", forward_passes_per_image=seq_passes, seconds_per_image=t_seq / cfg.images),
    ]
    agree = {}
    for j, r in enumerate(seq.radii):
        f_cert = np.array([pred == y and rad >= r for (pred, rad), y in zip(fixed, labels)])
        s_cert = np.array([c.certified[j] and c.prediction == y for c, y in zip(sequential, labels)])
        agree[f"{r:g}"] = {"fixed": float(f_cert.mean()), "sequential": float(s_cert.mean()), "same_decision": float((f_cert == s_cert).mean())}
    meta = {
        "benchmark": "sequential",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": asdict(cfg),
        "sequential": asdict(seq),
        "engine": repr(smooth.engine),
        "batch": bs,
        "forward_pass_ratio": float(cfg.n0 + cfg.n) / seq_passes,
        "wall_ratio": t_fixed / t_seq,
        "contention": contention(monitor.result, {"fixed": [t_fixed], "sequential": [t_seq]}),
        "cpu_features": cpu_features(),
        **provenance(device),
    }
    return {"meta": meta, "rows": rows, "certified_accuracy": agree}


def format_sequential(result: dict[str, Any]) -> str:
    """The sequential benchmark as a plain-text table."""
    m = result["meta"]
    lines = [f"{'method':<28}{'forward passes/image':>22}{'s/image':>10}"]
    lines += [f"{r['method']:<28}{r['forward_passes_per_image']:>22,.0f}{r['seconds_per_image']:>10.2f}" for r in result["rows"]]
    lines.append(f"forward passes: {m['forward_pass_ratio']:.1f}x fewer; wall time: {m['wall_ratio']:.1f}x shorter")
    lines.append(f"{'radius':<8}{'fixed':>8}{'sequential':>12}{'same decision':>15}")
    lines += [f"{r:<8}{v['fixed']:>8.3f}{v['sequential']:>12.3f}{v['same_decision']:>15.3f}" for r, v in result["certified_accuracy"].items()]
    if m["contention"]["contended"]:
        lines.append("CONTENDED: " + "; ".join(m["contention"]["reasons"]))
    return "\n".join(lines)
