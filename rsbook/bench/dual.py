"""``rsbook bench dual``: chapter 4's dual-smoothing certification against the raw forward of selector + classifier.

A dual-smoothing certificate costs ``n_h`` selector passes plus ``n0 + n`` classifier passes per
noise level per image (:func:`rsbook.methods.dual.dual_certify`). The benchmark times the whole
certification (the selector's draws through the engine's ``values``, every level's counts through
``Smooth.certify_many``, and the sound radius's scipy work) and compares it with the time the
two networks' raw forward throughputs allow for the same number of passes:
``ideal = images n_h / rate_h + classifier passes / rate_f``, ratio ``ideal / measured``.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..core.certify import Smooth
from ..core.engine import Engine
from ..core.noise import Gaussian
from ..core.streams import stream
from ..infra.provenance import cpu_features, provenance
from .certify import BenchConfig
from .common import _images, _sync
from .load import LoadMonitor, contention

__all__ = ["DualBenchConfig", "bench_dual", "format_dual"]


@dataclass(frozen=True)
class DualBenchConfig:
    """One ``rsbook bench dual`` run: chapter 4's selector (random weights, a non-constant output)
    and ``classifier`` at ``sigma``; budgets ``Ds`` with and without clipping ``clip``."""

    classifier: str = "cnn4"
    sigma: float = 0.25
    n_h: int = 1000
    alpha_h: float = 1e-5
    n0: int = 100
    n: int = 1000
    Ds: tuple[float, ...] = (0.1, 0.2)
    clip: tuple[float, float] = (0.16, 0.24)
    images: int = 4
    repeats: int = 3
    forward_seconds: float = 2.0
    batch_size: int = 0  # 0: the engine's sweep
    seed: int = 0
    threads: int = 0
    device: str = "cpu"


def bench_dual(cfg: DualBenchConfig, log=print) -> dict[str, Any]:
    """Dual-smoothing certification against the raw forward of selector + classifier (module docstring).

    Rows: the selector's and the classifier's raw forward (images/s) and the certification
    (forward passes/s, ratio ``ideal / measured``). Each quantity is its best of ``repeats``
    interleaved rounds; the machine's load is recorded as in :func:`~rsbook.bench.certify.bench_certify`.
    """
    from ..methods.dual import DualSettings, dual_certify, selector_draws
    from ..models.classifiers import build_model, for_inference
    from ..models.selector import FixedInputs, NoiseSelector

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    sel = NoiseSelector(3, init_sigma=cfg.sigma)
    torch.nn.init.normal_(sel.head.weight, std=0.05)  # a varying output, as a trained selector's
    h = FixedInputs(sel.eval().requires_grad_(False), cfg.sigma, 0.0).to(device)
    clf = for_inference(build_model(cfg.classifier, "cifar10")).requires_grad_(False).to(device)
    xs, idxs = _images(BenchConfig(dataset="cifar10", images=cfg.images, sigma=cfg.sigma))
    xs = xs.to(device)
    shape = tuple(xs.shape[1:])
    smooth = Smooth(clf, 10, Gaussian(cfg.sigma), compile=False)
    h_engine = Engine(h, None, Gaussian(cfg.sigma), channels_last=False)
    bs = cfg.batch_size or None
    bs_f = smooth.engine.warmup(shape, bs, planned=100 * (cfg.n0 + cfg.n))
    bs_h = h_engine.warmup(shape, bs, planned=100 * cfg.n_h)
    st = DualSettings(sigma_m=cfg.sigma, n_h=cfg.n_h, alpha_h=cfg.alpha_h, n0=cfg.n0, n=cfg.n)
    runs: dict[str, list[float]] = {"selector fw": [], "classifier fw": [], "certify": [], "ratio": []}
    passes = {}
    with LoadMonitor() as monitor:
        for r in range(cfg.repeats):
            log(f"[bench] round {r + 1}/{cfg.repeats}")
            fh = h_engine.throughput(shape, bs_h, seconds=cfg.forward_seconds)
            ff = smooth.engine.throughput(shape, bs_f, seconds=cfg.forward_seconds)
            before = smooth.engine.stats["samples"]
            t0 = time.perf_counter()
            draws = selector_draws(h, list(xs), [stream("selector", cfg.seed, i, device) for i in idxs], cfg.n_h, cfg.sigma, bs_h)
            dual_certify(smooth, list(xs), draws, lambda j, k: stream("dual", cfg.seed, idxs[j], device, k=k), st, cfg.Ds,
                         (None, cfg.clip), bs_f)
            _sync(device)
            wall = time.perf_counter() - t0
            f_passes = smooth.engine.stats["samples"] - before
            passes = {"selector": cfg.images * cfg.n_h, "classifier": int(f_passes)}
            ideal = passes["selector"] / fh + passes["classifier"] / ff
            runs["selector fw"].append(fh)
            runs["classifier fw"].append(ff)
            runs["certify"].append((passes["selector"] + passes["classifier"]) / wall)
            runs["ratio"].append(ideal / wall)
    best = {k: float(np.max(v)) for k, v in runs.items()}
    rows = [dict(variant="raw forward, selector", batch=bs_h, per_s=best["selector fw"], unit="images/s", ratio_to_forward=None),
            dict(variant="raw forward, classifier", batch=bs_f, per_s=best["classifier fw"], unit="images/s", ratio_to_forward=None),
            dict(variant="dual certification", batch=bs_f, per_s=best["certify"], unit="passes/s", ratio_to_forward=best["ratio"],
                 worst_ratio=float(np.min(runs["ratio"])))]
    meta = {"benchmark": "dual", "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "config": asdict(cfg),
            "passes": passes, "contention": contention(monitor.result, {k: v for k, v in runs.items() if k != "ratio"}),
            "cpu_features": cpu_features(), **provenance(device)}
    return {"meta": meta, "rows": rows, "runs": runs}


def format_dual(result: dict[str, Any]) -> str:
    """The dual benchmark as a plain-text table with its machine and load lines."""
    meta, c, ct = result["meta"], result["meta"]["config"], result["meta"]["contention"]
    lines = [f"dual-smoothing benchmark  {meta['date']}  rsbook {meta['rsbook']} ({meta['git_commit'][:12]})  torch {meta['torch']}",
             f"device: {meta['device']}",
             f"selector + {c['classifier']}, sigma={c['sigma']}, n_h={c['n_h']}, n0={c['n0']}, n={c['n']}, D={c['Ds']}, "
             f"with and without clipping {c['clip']}, {c['images']} images; best of {c['repeats']} rounds; passes per round "
             f"{meta['passes']}",
             f"machine load during the run: other processes {ct.get('others', float('nan')):.0%} of the CPUs, rounds spread "
             f"{ct['spread']:.2f}x" + ("  WARNING: CONTENDED RUN (" + "; ".join(ct["reasons"]) + ")" if ct["contended"] else ""),
             "", f"{'variant':<26} {'batch':>5} {'throughput':>10} {'unit':<9} {'ideal/measured':>14}"]
    for r in result["rows"]:
        ratio = "" if r["ratio_to_forward"] is None else f"{r['ratio_to_forward']:.3f} (worst {r['worst_ratio']:.3f})"
        lines.append(f"{r['variant']:<26} {r['batch']:>5} {r['per_s']:>10,.0f} {r['unit']:<9} {ratio:>14}")
    return "\n".join(lines)
