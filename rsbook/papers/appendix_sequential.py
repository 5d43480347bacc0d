"""Appendix A2 (sequential certification): settings per profile, the reference runs, and the
synthetic experiments whose true ``p_A`` is known.

The page certifies chapter 0's sigma = 0.25 and 0.5 CNNs three ways on CIFAR-10:

* sequentially, with ``n_max`` = the paper's N (chapter 0's own logs, :func:`cohen2019.sequential_config`);
* with fixed N = ``n_reference`` on every ``reference_every``-th test image: the reference
  answer on a subset (stored here, or taken from chapter 0 where it holds the same config,
  as at ``paper``, where chapter 0 already certifies at N = 100,000);
* with chapter 0's fixed N (1,000 at ``cpu``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from ..artifacts import ArtifactStore
from ..bench import BenchConfig
from ..book.profiles import chapter_store, check_profile
from ..core.bounds import clopper_pearson_lower
from ..core.certify import Smooth
from ..core.engine import Item
from ..core.noise import Gaussian
from ..core.runner import CertifyConfig
from ..core.sequential import BetaBinomialCS, Sequential, checkpoints, naive_stop
from . import cohen2019

__all__ = ["CHAPTER", "Settings", "settings", "store", "reference_config", "reference_store", "bench_config", "KnownP",
           "boundary_error_rates", "power_table", "stream_bounds"]

CHAPTER = "A2_sequential_certification"


@dataclass(frozen=True)
class Settings:
    """A2's settings at one profile (the sequential runs' own settings are chapter 0's)."""

    n_reference: int = 100_000  # fixed N of the reference runs: the paper's
    reference_every: int = 200  # ... on every k-th test image (50 images)
    boundary_runs: int = 2000  # synthetic runs per rule in the soundness experiment
    boundary_alpha: float = 0.05  # its alpha (larger than 0.001 so that errors are countable)
    boundary_n_max: int = 10_000
    power_runs: int = 40  # synthetic inputs per p_A in the power table


_SETTINGS = {
    "smoke": Settings(n_reference=2000, reference_every=2500, boundary_runs=300, boundary_n_max=2000, power_runs=4),
    "cpu": Settings(),
    "paper": Settings(reference_every=20, boundary_runs=20_000),
}


def settings(profile: str) -> Settings:
    """``dry_run`` is ``paper`` with tiny sizes (derived, so it cannot drift)."""
    check_profile(profile)
    if profile == "dry_run":
        p = _SETTINGS["paper"]
        return dataclasses.replace(p, n_reference=cohen2019.settings("dry_run").n_max, reference_every=5000, boundary_runs=200,
                                   boundary_n_max=1000, power_runs=2)
    return _SETTINGS[profile]


def store(profile: str, recompute: bool = False) -> ArtifactStore:
    """A2's own artifact store (the reference runs)."""
    return chapter_store(CHAPTER, profile, recompute)


def reference_config(sigma: float, profile: str, seed: int = 0) -> CertifyConfig:
    """Fixed-N certification of chapter 0's ``sigma`` CNN on the reference subset."""
    s = settings(profile)
    return cohen2019.certify_config(cohen2019.cifar_config(sigma, profile, seed=seed), sigma, profile, n=s.n_reference,
                                    every=s.reference_every, seed=seed)


def reference_store(cfg: CertifyConfig, profile: str, recompute: bool = False) -> ArtifactStore:
    """Chapter 0's store if it already holds ``cfg`` (as at ``paper``), else A2's own."""
    ch0 = cohen2019.store(profile)
    return ch0 if ch0.exists(cfg, "tsv") and not recompute else store(profile, recompute)


def bench_config(profile: str, device: str = "cpu", seed: int = 0) -> BenchConfig:
    """The ``rsbook bench sequential`` run of the page: fixed N vs sequential with ``n_max = N``
    on the same images in one process (``cpu``: chapter 0's sigma = 0.25 CNN, N = 10,000)."""
    from .appendix_speed import chapter0_weights

    check_profile(profile)
    if profile == "smoke":
        return BenchConfig(model="lenet", dataset="mnist", images=2, n=500, compile="off", device=device, seed=seed)
    if profile == "dry_run":
        return BenchConfig(model="cifar_resnet110", images=2, n0=10, n=200, compile="off", batch_size=64, seed=seed)
    if profile == "cpu":  # N = 10,000 keeps the fixed-N side to a minute on 2 cores
        return BenchConfig(model="cnn4", weights=chapter0_weights(0.25), n=10_000, images=10, device=device, seed=seed)
    return BenchConfig(model="cnn4", weights=chapter0_weights(0.25), n=100_000, images=50, device=device, seed=seed)


# -- synthetic classifiers with a known p_A ------------------------------------------------------


class KnownP(nn.Module):
    """Two classes; class 1 iff the first input coordinate exceeds 0. Smoothed with
    ``Gaussian(sigma)`` at the input ``x_0 = sigma * Phi^-1(p)``, class 1 has probability exactly
    ``p`` and the true l2 robust radius is ``|x_0|``: a classifier whose answer is known."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, 0]
        return torch.stack([-z, z], dim=1)

    @staticmethod
    def input_for(p: float, sigma: float) -> torch.Tensor:
        return torch.full((1, 1, 1), sigma * float(norm.ppf(p)))


def boundary_error_rates(p: float, alpha: float, n_max: int, runs: int, seed: int = 0, seq: Sequential | None = None) -> dict[str, Any]:
    """How often each rule certifies a radius whose threshold equals the true ``p`` (always wrong).

    * the sequence: the package's :meth:`Smooth.certify_sequential_many` on :class:`KnownP`;
    * the naive rule: the fixed-n Clopper-Pearson bound read at the same checkpoints (the
      negative control, :func:`~rsbook.core.sequential.naive_stop`);
    * one Clopper-Pearson bound at fixed ``n_max`` (valid; the baseline).
    """
    seq = seq or Sequential(radii=(1.0,))
    sigma, r = 1.0, float(norm.ppf(p))
    seq = dataclasses.replace(seq, radii=(r,))
    smooth = Smooth(KnownP(), 2, Gaussian(sigma), channels_last=False, compile=False)
    x = KnownP.input_for(p, sigma)
    items = [Item(i, x, torch.Generator().manual_seed((seed << 32) + i), c_a=1) for i in range(runs)]
    out = list(smooth.certify_sequential_many(items, 1, n_max, alpha, 16_384, seq, window=runs))
    rng = np.random.default_rng(seed)
    marks = checkpoints(seq.first, seq.growth, n_max)
    naive = [naive_stop(lambda k: int(rng.binomial(k, p)), n_max, alpha, p, marks) for _ in range(runs)]
    fixed = clopper_pearson_lower(rng.binomial(n_max, p, size=runs), n_max, alpha) > p
    return {"p": p, "alpha": alpha, "runs": runs, "n_max": n_max, "looks": len(marks),
            "sequence": float(np.mean([c.certified[-1] for c in out])), "naive": float(np.mean(naive)),
            "fixed": float(np.mean(fixed)), "sequence_samples": float(np.mean([c.samples for c in out]))}


def power_table(ps: tuple[float, ...], sigma: float, radii: tuple[float, ...], n_max: int, alpha: float, runs: int,
                n0: int = 100, seed: int = 0) -> list[dict[str, Any]]:
    """Mean samples and decisions of the sequential certifier on :class:`KnownP` at each ``p``,
    next to what fixed N = ``n_max`` costs; ``truth`` is whether ``p`` exceeds each threshold."""
    smooth = Smooth(KnownP(), 2, Gaussian(sigma), channels_last=False, compile=False)
    seq = Sequential(radii=radii)
    rows = []
    for k, p in enumerate(ps):
        x = KnownP.input_for(min(p, 1 - 1e-12), sigma)
        items = [Item(i, x, torch.Generator().manual_seed((seed << 40) + (k << 20) + i)) for i in range(runs)]
        out = list(smooth.certify_sequential_many(items, n0, n_max, alpha, 16_384, seq, window=runs))
        certified = np.array([c.certified for c in out]).mean(axis=0)
        rows.append({"p_A": p, "mean samples": n0 + float(np.mean([c.samples for c in out])),
                     "max samples": n0 + int(max(c.samples for c in out)), "fixed N": n0 + n_max,
                     **{f"certified at {r:g}": c for r, c in zip(seq.radii, certified)},
                     "true radius": sigma * float(norm.ppf(p)) if p < 1 else float("inf")})
    return rows


def stream_bounds(p: float, n_max: int, alpha: float, seq: Sequential, seed: int = 0) -> dict[str, np.ndarray]:
    """One Bernoulli(``p``) stream read at the sequence's checkpoints: ``n``, the sequence's
    ``L_n`` and ``U_n``, and the fixed-n Clopper-Pearson lower bound at each ``n`` (for a figure)."""
    marks = checkpoints(seq.first, seq.growth, n_max)
    rng = np.random.default_rng(seed)
    s = np.cumsum(rng.binomial(np.diff(np.concatenate([[0], marks])), p))
    cs = BetaBinomialCS(alpha, seq.prior_a, seq.prior_b)
    return {"n": marks, "lower": cs.lower(s, marks), "upper": cs.upper(s, marks),
            "clopper_pearson": clopper_pearson_lower(s, marks, alpha)}
