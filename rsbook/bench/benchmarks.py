"""``rsbook bench certify``: the engine against the published certification loop, side by side;
``rsbook bench sequential``: the sequential certifier against fixed-N ``certify``.

One run measures, in one process, for one model, noise, ``N`` and set of test images:

* raw forward throughput (images/s) at the best batch size, for the model as the reference
  evaluates it (fp32, NCHW, eager) and as the engine evaluates it;
* the **reference loop** (:mod:`rsbook.core.reference`), Cohen et al.'s published code: per
  image, repeat ``x`` into batches of 400, ``randn_like`` noise, fp32 forward, argmax, counts
  moved to the CPU every batch, Clopper-Pearson at the end;
* :class:`~rsbook.core.certify.Smooth` on the :class:`~rsbook.core.engine.Engine` (noise
  samples/s, its ratio to the engine's raw forward throughput, its speedup over the reference);
* whether both give the same certificates. Both draw each image's noise from a generator
  seeded by ``(seed, idx)`` in blocks of 400, so the noise is identical and counts can differ
  only where floating-point differences (layout, compilation, precision) flip an argmax.

With ``sigmas`` the images are smoothed with different noise levels (image ``i`` with
``sigmas[i % len(sigmas)]``), each carried by its own engine item: the mixed-noise case.

**Contention.** A benchmark on a busy machine measures the machine, not the code. Each run
records how much CPU time other processes and the hypervisor (steal) took during its
measured rounds, the load average before them, and how far its rounds disagree; a run over the limits is marked
*contended*, says so in its table, and is refused where it would replace stored results.
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.certify import Smooth, certificate
from ..core.engine import Item, batch_candidates, forward_throughput
from ..core.noise import Noise, make_noise
from ..core.reference import REFERENCE_BATCH, reference_certify
from ..runs.runner import image_generator
from ..core.sequential import Sequential
from ..infra.data import NUM_CLASSES
from ..infra.provenance import cpu_features, provenance

__all__ = [
    "BenchConfig",
    "ContentionError",
    "LoadMonitor",
    "CONTENTION_LIMITS",
    "bench_certify",
    "bench_sequential",
    "DenoisedBenchConfig",
    "bench_denoised",
    "format_denoised",
    "format_table",
    "write_csv",
    "write_json",
]

#: A run is contended when, during its measured rounds, other processes used at least
#: ``others`` of the CPUs, the hypervisor stole at least ``steal`` of them, or some quantity's
#: best round was ``spread`` times its worst (off Linux, where CPU accounting is unknown: the
#: 1-minute load average before it was above the core count).
CONTENTION_LIMITS = {"others": 0.25, "steal": 0.10, "spread": 1.5}


class ContentionError(RuntimeError):
    """A benchmark ran on a busy machine; its numbers must not replace stored ones."""


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
    batch_size: int = 0  # 0: each side at its best batch (swept); k: both raw forwards and the engine at batch k
    seed: int = 0
    threads: int = 0  # 0: torch's default
    repeats: int = 3  # interleaved rounds; the table shows each quantity's best round
    forward_seconds: float = 2.0  # per raw-forward measurement (half that per swept batch size)
    sigmas: tuple[float, ...] = field(default=(), metadata={"key_omits_default": True})  # per-image levels (mixed noise)

    def __post_init__(self) -> None:
        make_noise(self.noise, self.sigma)
        for s in self.sigmas:
            make_noise(self.noise, s)
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be auto, on or off, got {self.compile!r}")
        if self.images < 1 or self.repeats < 1:
            raise ValueError("images and repeats must be >= 1")

    def noise_of(self, i: int) -> Noise:
        """The noise of the ``i``-th benchmark image."""
        return make_noise(self.noise, self.sigmas[i % len(self.sigmas)] if self.sigmas else self.sigma)


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU jiffies of the whole machine since boot, or None off Linux."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


class LoadMonitor:
    """How busy the machine was with *other* work while a ``with`` block ran.

    ``others``: CPU time of all other processes over the machine's capacity; ``steal``: time
    the hypervisor gave to other guests; ``loadavg``: the 1-minute load average at the start.
    Off Linux only ``loadavg`` is known.
    """

    def __init__(self):
        self.result: dict[str, float] = {}

    def __enter__(self) -> "LoadMonitor":
        self._stat, self._self = _proc_stat(), sum(os.times()[:2])
        self._loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        return self

    def __exit__(self, *exc) -> None:
        stat, own = _proc_stat(), sum(os.times()[:2])
        out = {"loadavg": self._loadavg, "cores": float(os.cpu_count() or 1), "others": float("nan"), "steal": float("nan")}
        if self._stat and stat and stat[2] > self._stat[2]:
            tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            total = stat[2] - self._stat[2]
            mine = (own - self._self) * tick
            out["others"] = max(0.0, (stat[0] - self._stat[0] - mine) / total)
            out["steal"] = (stat[1] - self._stat[1]) / total
        self.result = out


def contention(load: dict[str, float], runs: dict[str, list[float]]) -> dict[str, Any]:
    """Whether a run was contended, and why (see :data:`CONTENTION_LIMITS`)."""
    spread = max((max(v) / min(v) for v in runs.values() if v and min(v) > 0), default=1.0)
    reasons = []
    if load.get("others", 0) >= CONTENTION_LIMITS["others"]:
        reasons.append(f"other processes used {load['others']:.0%} of the CPUs")
    if load.get("steal", 0) >= CONTENTION_LIMITS["steal"]:
        reasons.append(f"the hypervisor stole {load['steal']:.0%} of the CPU time")
    # The load average counts this process's own threads (and lags a minute behind), so it
    # decides only where the CPU accounting of /proc/stat is unavailable.
    if math.isnan(load.get("others", math.nan)) and load.get("loadavg", 0) > load.get("cores", math.inf):
        reasons.append(f"the load average was {load['loadavg']:.1f} on {load['cores']:.0f} cores before the run")
    if spread >= CONTENTION_LIMITS["spread"]:
        reasons.append(f"rounds disagree up to {spread:.2f}x")
    return {**load, "spread": spread, "contended": bool(reasons), "reasons": reasons}


def _load_model(cfg: BenchConfig, device: torch.device) -> torch.nn.Module:
    from ..models.classifiers import build_model

    model = build_model(cfg.model, cfg.dataset, NUM_CLASSES[cfg.dataset])
    if cfg.weights != "random":
        path = Path(cfg.weights)
        if not path.is_absolute() and not path.is_file():  # repo-relative paths keep configs portable
            from ..infra.paths import repo_root

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
    from ..infra.data import embedded_test_subset

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
    noises = [cfg.noise_of(i) for i in range(cfg.images)]
    xs, idxs = _images(cfg)
    shape = tuple(xs.shape[1:])
    ref_model = _load_model(cfg, device)
    eng_model = copy.deepcopy(ref_model)
    K = NUM_CLASSES[cfg.dataset]
    compile_flag = {"auto": None, "on": True, "off": False}[cfg.compile]
    smooth = Smooth(eng_model, K, noises[0], precision=cfg.precision, compile=compile_flag)
    engine = smooth.engine
    total = cfg.images * (cfg.n0 + cfg.n)
    candidates = batch_candidates(device)

    # Set-up (sweeps, compilation and its worker processes) is not part of the load record.
    if cfg.batch_size:  # a given batch is used by both: no sweep at all (quick runs)
        candidates = (cfg.batch_size,)
    log(f"[bench] raw forward of the reference model (fp32, NCHW, eager), batches {candidates} ...")
    with torch.inference_mode():
        ref_rates = forward_throughput(ref_model, shape, device, candidates, seconds=cfg.forward_seconds / 4, channels_last=False,
                                       rounds=min(3, cfg.repeats))
    ref_bs = max(ref_rates, key=ref_rates.get)

    log("[bench] engine set-up (layout, compilation if chosen, batch-size sweep) ...")
    t0 = time.perf_counter()
    engine.sweep_seconds, engine.sweep_rounds = cfg.forward_seconds / 4, min(3, cfg.repeats)
    # compile="auto" decides as for Cohen's 500-image run; compiles inside the engine's guard (eager fallback)
    bs = engine.warmup(shape, cfg.batch_size or None, planned=500 * (cfg.n0 + cfg.n))
    setup_s = time.perf_counter() - t0
    log(f"[bench] {engine!r}, batch {bs}, set-up {setup_s:.1f} s")
    runs: dict[str, list[float]] = {"ref_fw": [], "eng_fw": [], "ref": [], "eng": []}
    with torch.inference_mode():  # warm both paths up (oneDNN primitives, thread pools)
        forward_throughput(ref_model, shape, device, [ref_bs], seconds=cfg.forward_seconds / 2, channels_last=False)
    engine.throughput(shape, bs, seconds=cfg.forward_seconds / 2)
    shares = []
    with LoadMonitor() as monitor:  # the measured rounds only
        for r in range(cfg.repeats):  # interleaved rounds, each throughput next to its raw forward
            log(f"[bench] round {r + 1}/{cfg.repeats}: raw forwards, reference loop, engine ({cfg.images} images, N = {cfg.n0} + {cfg.n})")
            with torch.inference_mode():
                runs["ref_fw"].append(forward_throughput(ref_model, shape, device, [ref_bs], seconds=cfg.forward_seconds, channels_last=False)[ref_bs])
            ref_results, t0 = [], time.perf_counter()
            for x, idx, noise in zip(xs, idxs, noises):
                seed = (cfg.seed << 32) + idx
                ref_results.append(reference_certify(ref_model, x.to(device), cfg.n0, cfg.n, cfg.alpha, noise, K, seed))
            _sync(device)
            runs["ref"].append(total / (time.perf_counter() - t0))
            runs["eng_fw"].append(engine.throughput(shape, bs, seconds=cfg.forward_seconds))
            items = [Item(idx, x, image_generator(cfg.seed, idx, device), noise) for x, idx, noise in zip(xs, idxs, noises)]
            engine.timing, engine.stats["forward_seconds"] = device.type == "cpu", 0.0  # CPU: no sync needed to time
            t0 = time.perf_counter()
            eng_results = [c for _, c in engine.counts(items, (cfg.n0, cfg.n), bs)]
            _sync(device)
            elapsed = time.perf_counter() - t0
            engine.timing = False
            runs["eng"].append(total / elapsed)
            shares.append(engine.stats["forward_seconds"] / elapsed if device.type == "cpu" else float("nan"))

    # A busy machine only ever slows a measurement down, so each quantity is its best round
    # (as timeit reports the minimum time); the range of all rounds is kept beside it.
    best = {k: float(np.max(v)) for k, v in runs.items()}
    ratio_eng = best["eng"] / best["eng_fw"]
    ratio_ref = best["ref"] / best["ref_fw"]
    speedup = best["eng"] / best["ref"]
    label = f"{cfg.precision}, {'channels_last' if engine.channels_last else 'NCHW'}, {'compiled' if engine.compiled else 'eager'}"
    ref_label = "fp32, NCHW, eager"

    def row(variant, evaluated, batch, key, unit, ratio=None, sp=None):
        return dict(variant=variant, precision=evaluated, batch=batch, per_s=best[key], unit=unit,
                    per_s_min=min(runs[key]), per_s_max=max(runs[key]), ratio_to_forward=ratio, speedup=sp)

    rows = [
        row("raw forward, reference model", ref_label, ref_bs, "ref_fw", "images/s"),
        row("raw forward, engine model", label, bs, "eng_fw", "images/s"),
        row("reference loop (Cohen et al.)", ref_label, REFERENCE_BATCH, "ref", "samples/s", ratio_ref, 1.0),
        row("Smooth.certify (engine)", label, bs, "eng", "samples/s", ratio_eng, speedup),
    ]
    equivalence = _equivalence(ref_results, eng_results, cfg, noises)
    meta = {
        "benchmark": "certify",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": asdict(cfg),
        "engine": repr(engine),
        "setup_seconds": setup_s,
        "engine_forward_share": float(np.median(shares)),  # of the engine's wall time (CPU runs), median over rounds
        "command": " ".join(["rsbook", *sys.argv[1:]]) if Path(sys.argv[0]).name == "rsbook" else None,
        "contention": contention(monitor.result, runs),
        "cpu_features": cpu_features(),
        **provenance(device),
    }
    return {"meta": meta, "rows": rows, "equivalence": equivalence}


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
        fixed = [(pred, radius) for _, pred, radius in smooth.certify_many(items(), cfg.n0, cfg.n, cfg.alpha, bs)]
        t_fixed = time.perf_counter() - t0
        log(f"[bench] sequential, n_max = {cfg.n:,} ...")
        t0 = time.perf_counter()
        sequential = list(smooth.certify_sequential_many(items(), cfg.n0, cfg.n, cfg.alpha, bs, seq))
        t_seq = time.perf_counter() - t0
    seq_passes = float(np.mean([c.samples for c in sequential])) + cfg.n0
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _equivalence(ref, eng, cfg: BenchConfig, noises: list[Noise]) -> dict[str, Any]:
    """Same predictions? Counts identical? Differences within the Monte Carlo spread?"""
    same_pred = identical = 0
    max_dna, max_dr, max_z = 0, 0.0, 0.0
    for (r0, r1), c, noise in zip(ref, eng, noises):
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
    """The benchmark as a plain-text table with its machine, load and equivalence lines."""
    meta, eq = result["meta"], result["equivalence"]
    c = meta["config"]
    noise = f"{c['noise']} sigma={c['sigma']}" if not c.get("sigmas") else f"{c['noise']} sigma per image in {list(c['sigmas'])}"
    lines = [
        f"certify benchmark  {meta['date']}  rsbook {meta['rsbook']} ({meta['git_commit'][:12]})  torch {meta['torch']}",
        f"device: {meta['device']}",
        f"model {c['model']} ({c['weights'] if c['weights'] == 'random' else 'trained'}) on {c['dataset']}, "
        f"{noise}, n0={c['n0']}, n={c['n']}, {c['images']} images; engine set-up {meta['setup_seconds']:.1f} s; "
        f"best of {c['repeats']} interleaved rounds"
        + ("" if math.isnan(meta["engine_forward_share"]) else f"; the engine spends {meta['engine_forward_share']:.0%} of its time in the model's forward"),
    ]
    if "contention" in meta:
        ct = meta["contention"]
        known = not math.isnan(ct.get("others", float("nan")))
        load = (f"other processes {ct['others']:.0%} of the CPUs, steal {ct['steal']:.0%}, " if known else "") + \
            f"load average before {ct['loadavg']:.1f} on {ct['cores']:.0f} cores, rounds spread {ct['spread']:.2f}x"
        lines.append(f"machine load during the run: {load}")
        if ct["contended"]:
            lines.append("WARNING: CONTENDED RUN (" + "; ".join(ct["reasons"]) + "): these timings measure a busy machine; "
                         "rerun on an idle one")
    lines += ["", f"{'variant':<30} {'evaluated as':<29} {'batch':>5} {'throughput (min-max)':>34} {'/forward':>8} {'speedup':>7}"]
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


def is_contended(result: dict[str, Any]) -> bool:
    """Whether a benchmark result was measured on a busy machine (results from before this
    check existed carry no record and count as not contended)."""
    return bool(result["meta"].get("contention", {}).get("contended", False))


def write_csv(result: dict[str, Any], path: str | Path) -> None:
    """One CSV row per table row, with the config, machine and equivalence columns repeated."""
    meta = {k: v for k, v in result["meta"].items() if k not in ("config", "contention", "cpu_features")}
    extra = {**{f"config_{k}": v for k, v in result["meta"]["config"].items()}, **meta,
             "contended": is_contended(result), **{f"eq_{k}": v for k, v in result["equivalence"].items()}}
    rows = [{**r, **extra} for r in result["rows"]]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")


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
