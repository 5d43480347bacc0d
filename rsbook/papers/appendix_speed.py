"""Appendix A1 (certification speed): the benchmark runs per profile.

The ``cpu`` runs were measured on the book's 2-core build machine and are stored in
``book/artifacts/benchmark/``; the trained models they certify are chapter 0's committed
``cpu`` artifacts, whose paths are derived here from their configs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..bench import BenchConfig, DenoisedBenchConfig
from ..book.profiles import check_profile, repo_root
from . import cohen2019

__all__ = ["CHAPTER", "MIXED_SIGMAS", "chapter0_weights", "runs", "denoised_runs", "scaleout_results", "scaleout_live", "gpu_rates",
           "projected_paper_hours", "SCALEOUT_GPUS"]

CHAPTER = "benchmark"
MIXED_SIGMAS = (0.12, 0.25, 0.50, 1.00)  # chapter 0's noise levels, one per image in turn


def chapter0_weights(sigma: float, dataset: str = "cifar10") -> str:
    """The repo-relative path of chapter 0's ``cpu``-profile model for ``sigma`` (CIFAR-10 CNN or MNIST LeNet)."""
    cfg = cohen2019.cifar_config(sigma, "cpu") if dataset == "cifar10" else cohen2019.mnist_config(sigma, "cpu")
    path, _ = cohen2019.store("cpu").paths(cfg, "pt")
    return os.path.relpath(path, repo_root())


def runs(profile: str, device: str = "cpu", seed: int = 0) -> list[BenchConfig]:
    """The benchmark runs of ``profile`` (``dry_run``: the ``paper`` runs on CPU with 2 images (one per sigma
    when mixed), N = 10 + 50, one round, batch 64 without sweeps)."""
    check_profile(profile)
    d = dict(device=device, seed=seed)
    if profile == "smoke":
        return [BenchConfig(model="lenet", dataset="mnist", images=2, n0=10, n=200, repeats=1, forward_seconds=0.1, compile="off", **d)]
    cnn4, lenet = chapter0_weights(0.25), chapter0_weights(0.25, "mnist")
    if profile == "cpu":
        return [
            BenchConfig(model="cnn4", weights=cnn4, n=1000, images=10, repeats=5, **d),
            BenchConfig(model="cnn4", weights=cnn4, n=1000, images=10, repeats=3, compile="off", **d),
            BenchConfig(model="cnn4", weights=cnn4, n=10_000, images=4, repeats=3, **d),
            BenchConfig(model="cifar_resnet20", n=1000, images=10, repeats=3, **d),
            BenchConfig(model="cifar_resnet110", n=1000, images=4, repeats=3, **d),
            BenchConfig(model="lenet", dataset="mnist", weights=lenet, n=1000, images=10, repeats=3, **d),
            BenchConfig(model="cnn4", weights=cnn4, n=1000, images=10, repeats=3, precision="bf16", **d),
            # per-item noise (rsbook 0.2): one noise for all 12 images, then each image its own sigma
            BenchConfig(model="cnn4", weights=cnn4, n=1000, images=12, repeats=5, **d),
            BenchConfig(model="cnn4", weights=cnn4, n=1000, images=12, repeats=5, sigmas=MIXED_SIGMAS, **d),
        ]
    paper = [
        BenchConfig(model="cnn4", weights=cnn4, n=10_000, images=10, **d),
        BenchConfig(model="cifar_resnet110", n=10_000, images=10, **d),
        BenchConfig(model="cifar_resnet110", n=10_000, images=10, precision="bf16", **d),
        BenchConfig(model="cifar_resnet110", n=10_000, images=12, sigmas=MIXED_SIGMAS, **d),
        BenchConfig(model="cifar_resnet110", n=100_000, images=2, repeats=1, **d),
    ]
    if profile == "dry_run":
        return [dataclasses.replace(c, device="cpu", n0=10, n=50, images=max(2, len(c.sigmas)),
                                    repeats=1, forward_seconds=0.1, compile="off", batch_size=64) for c in paper]
    return paper


def weights_exist(cfg: BenchConfig) -> bool:
    """Whether a run's weights file is present in this checkout (``random`` needs none)."""
    return cfg.weights == "random" or (repo_root() / Path(cfg.weights)).is_file()


def denoised_runs(profile: str, device: str = "cpu", seed: int = 0) -> list[DenoisedBenchConfig]:
    """The ``rsbook bench denoised`` runs (chapter 1's networks at the profile's sizes and schedule)."""
    from . import score_denoising

    check_profile(profile)
    s = score_denoising.settings(profile)
    base = DenoisedBenchConfig(width=s.score_width, levels=s.anneal.levels, steps=s.anneal.steps, device=device, seed=seed)
    if profile in ("smoke", "dry_run"):
        # dry_run keeps the paper's networks (a width-128 U-Net, L x T = 10 evaluations, ResNet-110), so its batches stay tiny
        return [dataclasses.replace(base, images=2, n0=4, n=16, repeats=1, forward_seconds=0.1, loop_samples=4, compile="off",
                                    batch_size=8, classifier="cnn4" if profile == "smoke" else "cifar_resnet110")]
    if profile == "cpu":
        return [dataclasses.replace(base, n=1000, images=4, repeats=3)]
    return [dataclasses.replace(base, classifier="cifar_resnet110", n=10_000, images=4, repeats=3, compile="auto")]


# -- scale-out under torchrun ---------------------------------------------------------------------

SCALEOUT_GPUS = (1, 2, 4, 8, 16)


def scaleout_results() -> dict[str, dict]:
    """The committed ``rsbook bench scaleout`` results (``book/artifacts/benchmark/scaleout-*.json``), by file stem."""
    from ..book.profiles import artifact_root

    return {p.stem: json.loads(p.read_text()) for p in sorted((artifact_root() / CHAPTER).glob("scaleout-*.json"))}


def scaleout_live(profile: str, device: str = "cpu", seed: int = 0) -> dict[str, dict]:
    """A live ``rsbook bench scaleout`` at ``profile``: ``smoke`` / ``dry_run`` 1 vs 2 CPU processes on a tiny run
    (``dry_run`` with the paper's ResNet-110); ``paper`` 1 process vs one per GPU at N = 100,000."""
    import torch

    from ..bench_scaleout import ScaleoutConfig, bench_scaleout

    check_profile(profile)
    if profile == "smoke":
        cfg = ScaleoutConfig(model="cnn4", images=3, n0=10, n=200, device="cpu", seed=seed, procs=(1, 2), threads=1)
    elif profile == "dry_run":
        cfg = ScaleoutConfig(model="cifar_resnet110", images=2, n0=10, n=50, device="cpu", seed=seed, procs=(1, 2), threads=1,
                             batch_size=32)
    elif profile == "paper":
        gpus = max(1, torch.cuda.device_count())
        cfg = ScaleoutConfig(model="cifar_resnet110", images=4 * gpus, n=100_000, device=device, seed=seed,
                             procs=(1, gpus) if gpus > 1 else (1,))
    else:
        raise ValueError("the cpu profile loads the committed scale-out runs (scaleout_results)")
    return {f"live-{profile}": bench_scaleout(cfg, log=lambda m: None)}


def gpu_rates(results: dict[str, dict]) -> dict[str, tuple[float, str]]:
    """``{arch: (samples/s, device)}``: one-process certification rates measured on a GPU (the best per arch)."""
    out: dict[str, tuple[float, str]] = {}
    for res in results.values():
        meta = res["meta"]
        rate, arch = meta.get("one_process_samples_per_s"), meta["config"]["model"]
        if rate and not meta["provenance"]["device"].startswith("cpu") and rate > out.get(arch, (0.0, ""))[0]:
            out[arch] = (float(rate), meta["provenance"]["device"])
    return out


def projected_paper_hours(rates: dict[str, tuple[float, str]], gpus: tuple[int, ...] = SCALEOUT_GPUS):
    """Expected certification hours of each chapter's ``paper`` profile on K GPUs, from measured one-process rates.

    Every certification log of the chapter's plan whose architecture has a measured rate counts
    ``ceil(images / K) * samples per image / rate`` (the slowest rank's share; logs run one after
    another). Logs of unmeasured architectures are listed, not guessed. Training, start-up and the
    merge are not included.
    """
    import pandas as pd

    from ..bench_scaleout import project
    from . import heat_smoothing, score_denoising

    rows = []
    for name, mod in (("0 (Cohen et al.)", cohen2019), ("1 (denoised smoothing)", score_denoising),
                      ("3 (HeatSmoothing)", heat_smoothing)):
        certs = mod.planned_work("paper")[1]
        counted = [p for p in certs if p.arch in rates]
        row = {"chapter": name, "logs": f"{len(counted)} of {len(certs)}",
               "forward passes": sum(p.images * _samples(p) for p in counted)}
        for k in gpus:
            row[f"{k} GPU" + ("s" if k > 1 else "")] = sum(project(p.images, _samples(p), rates[p.arch][0], k) for p in counted) / 3600
        row["not measured"] = ", ".join(sorted({p.arch for p in certs} - set(rates))) or "-"
        rows.append(row)
    return pd.DataFrame(rows)


def _samples(p) -> int:
    return p.samples if p.samples is not None else p.config.n0 + p.config.n
