"""``rsbook bench denoised``: chapter 1's denoised classifiers on the engine, against the raw
forward of denoiser + classifier and against a loop that denoises one noise sample at a time."""

from __future__ import annotations

import copy
import datetime as _dt
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..core.certify import Smooth
from ..core.engine import Item
from ..core.noise import make_noise
from ..core.streams import image_generator
from ..infra.provenance import cpu_features, provenance
from .certify import BenchConfig
from .common import _images, _sync
from .load import LoadMonitor, contention

__all__ = ["DenoisedBenchConfig", "bench_denoised", "format_denoised"]


@dataclass(frozen=True)
class DenoisedBenchConfig:
    """One ``rsbook bench denoised`` run: chapter 1's denoised classifiers on the engine.

    The networks are chapter 1's architectures with random weights (a dense convolutional
    network's speed does not depend on its weight values): the score U-Net of ``width``
    behind the one-step (Tweedie) and the ``levels x steps`` multi-step denoiser, before the
    ``classifier``.
    """

    width: int = 24
    classifier: str = "cnn4"
    sigma: float = 0.25
    levels: int = 3
    steps: int = 1
    n0: int = 100
    n: int = 1000
    images: int = 4
    loop_samples: int = 500  # noise samples the one-at-a-time loop denoises per round
    repeats: int = 3
    forward_seconds: float = 2.0
    batch_size: int = 0  # 0: the engine's sweep
    compile: str = "off"  # as chapter 1 certifies them (eager)
    seed: int = 0
    threads: int = 0
    device: str = "cpu"


def bench_denoised(cfg: DenoisedBenchConfig, log=print) -> dict[str, Any]:
    """Denoised certification on the engine against the raw forward of denoiser + classifier, and
    the multi-step path against a loop that denoises one noise sample at a time.

    Rows: for the one-step and the multi-step model, the engine's raw forward throughput of
    ``f(D(y, sigma))`` (images/s) and ``Smooth.certify``'s samples/s (ratio to that forward);
    for the multi-step model also the one-sample loop (``D`` and ``f`` on batches of one,
    samples/s) and the engine's speedup over it. Each quantity is its best of ``repeats``
    interleaved rounds; the machine's load is recorded as in :func:`bench_certify`.
    """
    from ..models.denoisers import ScoreUNet
    from ..methods.denoise import Anneal, AnnealingDenoiser, Denoised, TweedieDenoiser
    from ..models.classifiers import build_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    score = ScoreUNet(3, cfg.width).eval().requires_grad_(False)
    torch.nn.init.normal_(score.out[-1].weight, std=0.02)  # a non-zero output, as a trained network's
    clf = build_model(cfg.classifier, "cifar10").eval().requires_grad_(False)
    schedule = Anneal(levels=cfg.levels, steps=cfg.steps)
    models = {"one-step": Denoised(TweedieDenoiser(score), clf).to(device),
              "multi-step": Denoised(AnnealingDenoiser(score, "gaussian", schedule), copy.deepcopy(clf)).to(device)}
    cfg_cfg = BenchConfig(dataset="cifar10", images=cfg.images, sigma=cfg.sigma)
    xs, idxs = _images(cfg_cfg)
    shape = tuple(xs.shape[1:])
    noise = make_noise("gaussian", cfg.sigma)
    compile_flag = {"auto": None, "on": True, "off": False}[cfg.compile]
    total = cfg.images * (cfg.n0 + cfg.n)
    smooths, batches = {}, {}
    for name, m in models.items():
        log(f"[bench] {name}: engine set-up ...")
        smooths[name] = Smooth(m, 10, noise, compile=compile_flag, noise_conditioned=True)
        eng = smooths[name].engine
        eng.sweep_seconds, eng.sweep_rounds = cfg.forward_seconds / 4, min(3, cfg.repeats)
        batches[name] = eng.warmup(shape, cfg.batch_size or None, planned=100 * (cfg.n0 + cfg.n))
    loop_model = copy.deepcopy(models["multi-step"]).eval()
    sig1 = torch.full((1,), cfg.sigma, device=device)
    runs: dict[str, list[float]] = {k: [] for k in ("one-step fw", "one-step", "multi-step fw", "multi-step", "multi-step fw b1", "loop")}

    def loop(samples: int) -> float:
        """Samples/s of denoising and classifying one noise sample at a time (eager, batch 1)."""
        gen = torch.Generator(device).manual_seed(cfg.seed)
        x = xs[0:1].to(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(samples):
                loop_model(x + noise.sample(x.shape, gen, device), sig1).argmax(1).item()
        return samples / (time.perf_counter() - t0)

    loop(max(1, cfg.loop_samples // 10))  # warm-up: batch-1 kernels and allocations outside the timed rounds
    with LoadMonitor() as monitor:
        for r in range(cfg.repeats):
            log(f"[bench] round {r + 1}/{cfg.repeats}")
            for name in models:
                eng, bs = smooths[name].engine, batches[name]
                runs[f"{name} fw"].append(eng.throughput(shape, bs, seconds=cfg.forward_seconds))
                items = [Item(idx, x, image_generator(cfg.seed, idx, device)) for x, idx in zip(xs, idxs)]
                t0 = time.perf_counter()
                for _ in eng.counts(items, (cfg.n0, cfg.n), bs):
                    pass
                _sync(device)
                runs[name].append(total / (time.perf_counter() - t0))
            runs["multi-step fw b1"].append(smooths["multi-step"].engine.throughput(shape, 1, seconds=cfg.forward_seconds))
            runs["loop"].append(loop(cfg.loop_samples))
    best = {k: float(np.max(v)) for k, v in runs.items()}
    rows = []
    for name in models:
        evals = 1 if name == "one-step" else schedule.evaluations
        rows.append(dict(variant=f"raw forward, {name}", batch=batches[name], per_s=best[f"{name} fw"], unit="images/s",
                         score_evaluations=evals, ratio_to_forward=None, speedup=None))
        rows.append(dict(variant=f"Smooth.certify, {name}", batch=batches[name], per_s=best[name], unit="samples/s",
                         score_evaluations=evals, ratio_to_forward=best[name] / best[f"{name} fw"], speedup=None))
    rows.append(dict(variant="one-sample loop, multi-step", batch=1, per_s=best["loop"], unit="samples/s",
                     score_evaluations=schedule.evaluations, ratio_to_forward=None, speedup=None))
    rows.append(dict(variant="raw forward, multi-step, batch 1", batch=1, per_s=best["multi-step fw b1"], unit="images/s",
                     score_evaluations=schedule.evaluations, ratio_to_forward=None,
                     speedup=best["multi-step fw"] / best["multi-step fw b1"]))
    rows[3]["speedup"] = best["multi-step"] / best["loop"]
    meta = {
        "benchmark": "denoised",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": asdict(cfg),
        "engines": {k: repr(s.engine) for k, s in smooths.items()},
        "contention": contention(monitor.result, runs),
        "cpu_features": cpu_features(),
        **provenance(device),
    }
    return {"meta": meta, "rows": rows, "runs": runs}


def format_denoised(result: dict[str, Any]) -> str:
    """The denoised benchmark as a plain-text table with its machine and load lines."""
    meta, c = result["meta"], result["meta"]["config"]
    ct = meta["contention"]
    lines = [f"denoised benchmark  {meta['date']}  rsbook {meta['rsbook']} ({meta['git_commit'][:12]})  torch {meta['torch']}",
             f"device: {meta['device']}",
             f"score U-Net width {c['width']} + {c['classifier']}, Gaussian sigma={c['sigma']}, multi-step L x T = "
             f"{c['levels']} x {c['steps']}, n0={c['n0']}, n={c['n']}, {c['images']} images; best of {c['repeats']} rounds",
             f"machine load during the run: other processes {ct.get('others', float('nan')):.0%} of the CPUs, "
             f"rounds spread {ct['spread']:.2f}x" + ("  WARNING: CONTENDED RUN (" + "; ".join(ct["reasons"]) + ")" if ct["contended"] else ""),
             "", f"{'variant':<34} {'batch':>5} {'throughput':>10} {'unit':<9} {'/forward':>8} {'speedup':>8}"]
    for r in result["rows"]:
        ratio = "" if r["ratio_to_forward"] is None else f"{r['ratio_to_forward']:.2f}"
        sp = "" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        lines.append(f"{r['variant']:<34} {r['batch']:>5} {r['per_s']:>10,.0f} {r['unit']:<9} {ratio:>8} {sp:>8}")
    lines.append("speedup: Smooth.certify over the one-sample loop; on the batch-1 row, the batched raw forward over batch 1,"
                 " the most that batching can gain on this device")
    return "\n".join(lines)
