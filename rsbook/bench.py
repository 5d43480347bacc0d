"""``rsbook bench certify``: the engine against the published certification loop, side by side.

One run measures, in one process, for one model, noise, ``N`` and set of test images:

* raw forward throughput (images/s) at the best batch size, for the model as the reference
  evaluates it (fp32, NCHW, eager) and as the engine evaluates it;
* the **reference loop**, written as Cohen et al.'s published code does it: per image, repeat
  ``x`` into batches of 400, ``randn_like`` noise, fp32 forward, argmax, counts moved to the
  CPU every batch, Clopper-Pearson at the end;
* :class:`~rsbook.certify.Smooth` on the :class:`~rsbook.engine.Engine` (noise samples/s,
  its ratio to the engine's raw forward throughput, its speedup over the reference loop);
* whether both give the same certificates. Both draw each image's noise from a generator
  seeded by ``(seed, idx)`` in blocks of 400, so the noise is identical and counts can differ
  only where floating-point differences (layout, compilation, precision) flip an argmax.
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .certify import Smooth, certificate
from .data import NUM_CLASSES
from .engine import _CPU_BATCHES, _GPU_BATCHES, forward_throughput
from .noise import Noise, make_noise
from .provenance import provenance
from .runner import image_generator

__all__ = ["BenchConfig", "reference_counts", "reference_certify", "bench_certify", "format_table", "write_csv"]

REFERENCE_BATCH = 400  # Cohen et al.'s batch size


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    model: str = "cnn4"
    dataset: str = "cifar10"
    weights: str = "random"  # or a path to a state dict (e.g. a trained model artifact)
    noise: str = "gaussian"
    sigma: float = 0.25
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    images: int = 10
    device: str = "cpu"
    precision: str = "fp32"
    compile: str = "auto"  # auto (as the runner would for a 500-image run) | on | off
    batch_size: int = 0  # 0: automatic
    seed: int = 0
    threads: int = 0  # 0: torch's default
    repeats: int = 3  # interleaved rounds; the table shows each quantity's best round
    forward_seconds: float = 2.0  # per raw-forward measurement (half that per swept batch size)


def reference_counts(model, x: torch.Tensor, num: int, noise: Noise, num_classes: int, batch: int = REFERENCE_BATCH) -> np.ndarray:
    """Cohen et al.'s ``_sample_noise``: class counts over ``num`` draws, as published.

    Draws from the global RNG (``randn_like``); counts go to the CPU after every batch.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    remaining = num
    with torch.no_grad():
        while remaining > 0:
            this = min(batch, remaining)
            remaining -= this
            b = x.repeat((this, 1, 1, 1))
            if noise.name == "gaussian":
                eps = torch.randn_like(b) * noise.sigma
            else:  # the published code is Gaussian-only; other noises draw the same way as the engine
                eps = noise.sample(b.shape, device=b.device)
            preds = model(b + eps).argmax(1)
            counts += np.bincount(preds.cpu().numpy(), minlength=num_classes)
    return counts


def reference_certify(model, x, n0, n, alpha, noise, num_classes, seed: int, batch: int = REFERENCE_BATCH):
    """The published CERTIFY, with the global RNG seeded by ``seed`` (as ``image_generator``)."""
    torch.manual_seed(seed)
    counts0 = reference_counts(model, x, n0, noise, num_classes, batch)
    counts = reference_counts(model, x, n, noise, num_classes, batch)
    return counts0, counts


def _load_model(cfg: BenchConfig, device: torch.device) -> torch.nn.Module:
    from .models import build_model

    model = build_model(cfg.model, cfg.dataset, NUM_CLASSES[cfg.dataset])
    if cfg.weights != "random":
        path = Path(cfg.weights)
        if not path.is_absolute() and not path.is_file():  # repo-relative paths keep configs portable
            from .profiles import repo_root

            path = repo_root() / path
        if not path.is_file():
            raise FileNotFoundError(f"--weights {path}: no such file (give a state-dict .pt, or 'random')")
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 -- unpickling and shape errors alike
            raise ValueError(f"--weights {path} is not a {cfg.model} state dict for {cfg.dataset} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}); pass a matching .pt or 'random'") from None
    return model.float().eval().to(device)


def _images(cfg: BenchConfig) -> tuple[torch.Tensor, list[int]]:
    from .data import embedded_test_subset

    subset = embedded_test_subset(cfg.dataset)
    if cfg.images > len(subset):
        raise ValueError(f"--images {cfg.images}: the embedded {cfg.dataset} subset has {len(subset)} images")
    xs = torch.stack([subset[i][0] for i in range(cfg.images)])
    return xs, [int(i) for i in subset.indices[: cfg.images]]


def bench_certify(cfg: BenchConfig, log=print) -> dict[str, Any]:
    """Run one benchmark (see the module docstring); returns ``{"meta", "rows", "equivalence"}``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    noise = make_noise(cfg.noise, cfg.sigma)
    xs, idxs = _images(cfg)
    shape = tuple(xs.shape[1:])
    ref_model = _load_model(cfg, device)
    eng_model = copy.deepcopy(ref_model)
    K = NUM_CLASSES[cfg.dataset]
    compile_flag = {"auto": None, "on": True, "off": False}[cfg.compile]
    smooth = Smooth(eng_model, K, noise, precision=cfg.precision, compile=compile_flag)
    engine = smooth.engine
    total = cfg.images * (cfg.n0 + cfg.n)
    candidates = _GPU_BATCHES if device.type == "cuda" else _CPU_BATCHES

    log(f"[bench] raw forward of the reference model (fp32, NCHW, eager), batches {candidates} ...")
    with torch.inference_mode():
        ref_rates = forward_throughput(ref_model, shape, device, candidates, seconds=cfg.forward_seconds / 4, channels_last=False, rounds=3)
    ref_bs = max(ref_rates, key=ref_rates.get)

    log("[bench] engine set-up (layout, compilation if chosen, batch-size sweep) ...")
    t0 = time.perf_counter()
    engine._prepare(500 * (cfg.n0 + cfg.n))  # compile="auto" decides as for Cohen's 500-image run
    engine.sweep_seconds = cfg.forward_seconds / 4
    # One tiny run sweeps batch sizes and compiles, inside the engine's guard (eager fallback).
    list(engine.counts([(None, xs[0], torch.Generator(device).manual_seed(0))], (1,), cfg.batch_size or None))
    bs = engine.batch_size_for(shape, cfg.batch_size or None)
    setup_s = time.perf_counter() - t0
    log(f"[bench] {engine!r}, batch {bs}, set-up {setup_s:.1f} s")
    runs: dict[str, list[float]] = {"ref_fw": [], "eng_fw": [], "ref": [], "eng": []}
    with torch.inference_mode():  # warm both paths up (oneDNN primitives, thread pools)
        forward_throughput(ref_model, shape, device, [ref_bs], seconds=cfg.forward_seconds / 2, channels_last=False)
        forward_throughput(engine.forward, shape, device, [bs], seconds=cfg.forward_seconds / 2, channels_last=engine.channels_last)
    forward_fn, in_forward = engine._forward_fn, [0.0]

    def timed_forward(batch):  # CPU only: on CUDA this would need a sync per batch
        t = time.perf_counter()
        out = forward_fn(batch)
        in_forward[0] += time.perf_counter() - t
        return out

    shares = []
    for r in range(cfg.repeats):  # interleaved rounds, each throughput next to its raw forward
        log(f"[bench] round {r + 1}/{cfg.repeats}: raw forwards, reference loop, engine ({cfg.images} images, N = {cfg.n0} + {cfg.n})")
        with torch.inference_mode():
            runs["ref_fw"].append(forward_throughput(ref_model, shape, device, [ref_bs], seconds=cfg.forward_seconds, channels_last=False)[ref_bs])
        ref_results, t0 = [], time.perf_counter()
        for x, idx in zip(xs, idxs):
            seed = (cfg.seed << 32) + idx
            ref_results.append(reference_certify(ref_model, x.to(device), cfg.n0, cfg.n, cfg.alpha, noise, K, seed))
        _sync(device)
        runs["ref"].append(total / (time.perf_counter() - t0))
        with torch.inference_mode():
            runs["eng_fw"].append(forward_throughput(engine.forward, shape, device, [bs], seconds=cfg.forward_seconds, channels_last=engine.channels_last)[bs])
        items = [(idx, x, image_generator(cfg.seed, idx, device)) for x, idx in zip(xs, idxs)]
        if device.type == "cpu":
            engine._forward_fn, in_forward[0] = timed_forward, 0.0
        t0 = time.perf_counter()
        eng_results = [c for _, c in engine.counts(items, (cfg.n0, cfg.n), bs)]
        _sync(device)
        elapsed = time.perf_counter() - t0
        engine._forward_fn = forward_fn
        runs["eng"].append(total / elapsed)
        shares.append(in_forward[0] / elapsed if device.type == "cpu" else float("nan"))

    # A busy machine only ever slows a measurement down, so each quantity is its best round
    # (as timeit reports the minimum time); the range of all rounds is kept beside it.
    med = {k: float(np.max(v)) for k, v in runs.items()}
    ratio_eng = med["eng"] / med["eng_fw"]
    ratio_ref = med["ref"] / med["ref_fw"]
    speedup = med["eng"] / med["ref"]
    label = f"{cfg.precision}, {'channels_last' if engine.channels_last else 'NCHW'}, {'compiled' if engine.compiled else 'eager'}"
    ref_label = "fp32, NCHW, eager"

    def row(variant, evaluated, batch, key, unit, ratio=None, sp=None):
        return dict(variant=variant, precision=evaluated, batch=batch, per_s=med[key], unit=unit,
                    per_s_min=min(runs[key]), per_s_max=max(runs[key]), ratio_to_forward=ratio, speedup=sp)

    rows = [
        row("raw forward, reference model", ref_label, ref_bs, "ref_fw", "images/s"),
        row("raw forward, engine model", label, bs, "eng_fw", "images/s"),
        row("reference loop (Cohen et al.)", ref_label, REFERENCE_BATCH, "ref", "samples/s", ratio_ref, 1.0),
        row("Smooth.certify (engine)", label, bs, "eng", "samples/s", ratio_eng, speedup),
    ]
    equivalence = _equivalence(ref_results, eng_results, cfg, noise)
    meta = {
        "benchmark": "certify",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": asdict(cfg),
        "engine": repr(engine),
        "setup_seconds": setup_s,
        "engine_forward_share": float(np.median(shares)),  # median over rounds  # of the engine's wall time (CPU runs)
        "command": " ".join(["rsbook", *sys.argv[1:]]) if Path(sys.argv[0]).name == "rsbook" else None,
        **provenance(device),
    }
    return {"meta": meta, "rows": rows, "equivalence": equivalence}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _equivalence(ref, eng, cfg: BenchConfig, noise: Noise) -> dict[str, Any]:
    """Same predictions? Counts identical? Differences within the Monte Carlo spread?"""
    same_pred = identical = 0
    max_dna, max_dr, max_z = 0, 0.0, 0.0
    for (r0, r1), c in zip(ref, eng):
        p_ref, rad_ref = certificate(r0, r1, cfg.alpha, noise)
        p_eng, rad_eng = certificate(c[0], c[1], cfg.alpha, noise)
        same_pred += p_ref == p_eng
        identical += bool(np.array_equal(r0, c[0]) and np.array_equal(r1, c[1]))
        ca = int(np.argmax(r0))
        dna = abs(int(r1[ca]) - int(c[1][ca]))
        p = min(max(r1[ca] / cfg.n, 1 / cfg.n), 1 - 1 / cfg.n)
        max_dna, max_dr = max(max_dna, dna), max(max_dr, abs(rad_ref - rad_eng))
        max_z = max(max_z, dna / math.sqrt(cfg.n * p * (1 - p)))
    m = len(ref)
    return {
        "images": m,
        "same_prediction": int(same_pred),
        "identical_counts": int(identical),
        "max_abs_diff_nA": int(max_dna),
        "max_abs_diff_radius": float(max_dr),
        "max_diff_in_mc_sd": float(max_z),  # |dn_A| / sqrt(n p (1-p))
        "equivalent": bool(same_pred == m and max_z <= 3.0),
    }


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a plain-text table with its machine and equivalence lines."""
    meta, eq = result["meta"], result["equivalence"]
    c = meta["config"]
    lines = [
        f"certify benchmark  {meta['date']}  rsbook {meta['rsbook']} ({meta['git_commit'][:12]})  torch {meta['torch']}",
        f"device: {meta['device']}",
        f"model {c['model']} ({c['weights'] if c['weights'] == 'random' else 'trained'}) on {c['dataset']}, "
        f"{c['noise']} sigma={c['sigma']}, n0={c['n0']}, n={c['n']}, {c['images']} images; engine set-up {meta['setup_seconds']:.1f} s; "
        f"best of {c['repeats']} interleaved rounds"
        + ("" if math.isnan(meta["engine_forward_share"]) else f"; the engine spends {meta['engine_forward_share']:.0%} of its time in the model's forward"),
        "",
        f"{'variant':<30} {'evaluated as':<29} {'batch':>5} {'throughput (min-max)':>34} {'/forward':>8} {'speedup':>7}",
    ]
    for r in result["rows"]:
        ratio = "" if r["ratio_to_forward"] is None else f"{r['ratio_to_forward']:.2f}"
        sp = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        rng = f"({r['per_s_min']:,.0f}-{r['per_s_max']:,.0f})"
        lines.append(f"{r['variant']:<30} {r['precision']:<29} {r['batch']:>5} {r['per_s']:>7,.0f} {rng:<16} {r['unit']:<9} {ratio:>8} {sp:>7}")
    lines += [
        "",
        f"certificates: {eq['same_prediction']}/{eq['images']} same prediction, {eq['identical_counts']}/{eq['images']} identical counts, "
        f"max |dn_A| = {eq['max_abs_diff_nA']} ({eq['max_diff_in_mc_sd']:.2f} Monte Carlo sd), max |dR| = {eq['max_abs_diff_radius']:.2g}: "
        + ("statistically equivalent" if eq["equivalent"] else "NOT EQUIVALENT"),
    ]
    return "\n".join(lines)


def write_csv(result: dict[str, Any], path: str | Path) -> None:
    """One CSV row per table row, with the config, machine and equivalence columns repeated."""
    meta = {k: v for k, v in result["meta"].items() if k != "config"}
    extra = {**{f"config_{k}": v for k, v in result["meta"]["config"].items()}, **meta,
             **{f"eq_{k}": v for k, v in result["equivalence"].items()}}
    rows = [{**r, **extra} for r in result["rows"]]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")
