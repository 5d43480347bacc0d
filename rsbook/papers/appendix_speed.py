"""Appendix A1 (certification speed): the benchmark runs per profile.

The ``cpu`` runs were measured on the book's 2-core build machine and are stored in
``book/artifacts/benchmark/``; the trained models they certify are chapter 0's committed
``cpu`` artifacts, whose paths are derived here from their configs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..bench import BenchConfig, DenoisedBenchConfig
from ..book.profiles import check_profile, repo_root
from . import cohen2019

__all__ = ["CHAPTER", "MIXED_SIGMAS", "chapter0_weights", "runs", "denoised_runs"]

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
