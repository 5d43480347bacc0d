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
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from torch import nn

from ..infra.artifacts import ArtifactStore
from ..bench.certify import BenchConfig
from ..book.claims import LEVEL, Check, Claims, greater, proportion
from ..book.eta import Plan, Planned
from ..book.profiles import chapter_store, check_profile
from ..core.bounds import clopper_pearson_lower
from ..core.certify import Smooth, max_certified_radius
from ..core.engine import Item
from ..core.noise import Gaussian
from ..runs.runner import CertifyConfig, certification_log
from ..core.sequential import BetaBinomialCS, Sequential, checkpoints, naive_stop
from ..infra.data import TEST_SIZES, test_subset
from . import cohen2019

__all__ = ["CHAPTER", "Settings", "settings", "store", "reference_config", "reference_store", "bench_config", "KINDS",
           "log_config", "log_store", "certification", "planned_work", "KnownP",
           "boundary_error_rates", "BoundaryConfig", "boundary_configs", "stored_boundary_rates", "power_table", "stream_bounds", "largest_certified", "passes_per_image", "method_table",
           "agreement_check", "radius_categories", "radius_palette", "pass_ratios", "agreements", "claims", "setting_note"]

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


# -- the page's certification logs: chapter 0's CNNs three ways ------------------------------------

#: The page's certifications of each of chapter 0's ``sequential_sigmas`` CNNs, in its order.
KINDS = ("sequential", "fixed", "reference")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")


def log_config(sigma: float, kind: str, profile: str, seed: int = 0) -> CertifyConfig:
    """The page's ``kind`` certification of chapter 0's ``sigma`` CNN: chapter 0's ``sequential`` run
    (:func:`cohen2019.sequential_config`) or its ``fixed``-N run, on chapter 0's test images, or the
    ``reference`` run (:func:`reference_config`)."""
    _check_kind(kind)
    if kind == "reference":
        return reference_config(sigma, profile, seed)
    model = cohen2019.cifar_config(sigma, profile, seed=seed)
    if kind == "sequential":
        return cohen2019.sequential_config(model, sigma, profile, seed=seed)
    return cohen2019.certify_config(model, sigma, profile, seed=seed)


def log_store(sigma: float, kind: str, profile: str, seed: int = 0, recompute: bool = False) -> ArtifactStore:
    """Where the ``kind`` log of :func:`log_config` is stored: chapter 0's store, or for the reference
    run :func:`reference_store`."""
    _check_kind(kind)
    if kind == "reference":
        return reference_store(reference_config(sigma, profile, seed), profile, recompute)
    return cohen2019.store(profile, recompute)


def certification(sigma: float, kind: str, profile: str, device: torch.device | str = "cpu", progress: bool = True,
                  seed: int = 0, recompute: bool = False) -> pd.DataFrame:
    """The page's ``kind`` log (:data:`KINDS`, :func:`log_config`) of chapter 0's ``sigma`` CNN (loaded, or
    computed resumably first and stored in :func:`log_store`), at chapter 0's ``n0``, ``alpha`` and
    batch size, with chapter 0's one :class:`~rsbook.core.certify.Smooth` of the model (:func:`cohen2019.smooth`)."""
    _check_kind(kind)
    ch0 = cohen2019.store(profile, recompute)
    if kind != "reference":
        return cohen2019.certification(cohen2019.cifar_config(sigma, profile, seed=seed), sigma, profile, ch0, device, progress,
                                       seed=seed, sequential=kind == "sequential")
    cfg = reference_config(sigma, profile, seed)
    return certification_log(cfg, cohen2019.smooth(cfg.model, ch0, device, progress), test_subset("cifar10", cfg.every),
                             reference_store(cfg, profile, recompute), batch_size=cohen2019.settings(profile).certify_batch,
                             progress=progress)


def planned_work(profile: str, seed: int = 0, device: str = "cpu") -> Plan:
    """The page's planned work: chapter 0's CNNs it loads (``trainings``; trained into chapter 0's store
    if absent), its reference logs (``certifications``; chapter 0's sequential and fixed-N logs are in
    chapter 0's plan), its ``rsbook bench sequential`` run and its boundary experiments (``other``,
    :func:`bench_config`, :func:`boundary_configs`)."""
    sigmas = cohen2019.settings(profile).sequential_sigmas
    refs = [reference_config(sg, profile, seed) for sg in sigmas]
    certs = [Planned(cfg, cfg.model.arch, -(-TEST_SIZES["cifar10"] // cfg.every)) for cfg in refs]  # ceil
    return Plan(trainings=[cohen2019.cifar_config(sg, profile, seed=seed) for sg in sigmas], certifications=certs,
                other=[bench_config(profile, device, seed), *boundary_configs(profile, seed)])


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
            "fixed": float(np.mean(fixed)), "sequence_samples": float(np.mean([c.estimation for c in out]))}


@dataclass(frozen=True)
class BoundaryConfig:
    """One :func:`boundary_error_rates` experiment (stored: thousands of synthetic sequential runs)."""

    p: float
    alpha: float
    n_max: int
    runs: int
    seed: int = 0


def boundary_configs(profile: str, seed: int = 0) -> list[BoundaryConfig]:
    """The page's two boundary experiments, at ``p = Phi(1)`` and ``Phi(2)``, at ``profile``'s sizes."""
    s = settings(profile)
    return [BoundaryConfig(float(norm.cdf(z)), s.boundary_alpha, s.boundary_n_max, s.boundary_runs, seed) for z in (1.0, 2.0)]


def stored_boundary_rates(cfg: BoundaryConfig, profile: str) -> tuple[dict[str, Any], float]:
    """:func:`boundary_error_rates` of ``cfg``, loaded from A2's store or computed and stored, and the
    seconds its computation took (from the artifact's metadata)."""
    def compute(out, work):
        Path(out).write_text(json.dumps(boundary_error_rates(cfg.p, cfg.alpha, cfg.n_max, cfg.runs, cfg.seed)))

    path, meta = store(profile).load_or_compute(cfg, compute, "result.json")
    return json.loads(Path(path).read_text()), float(meta["wall_time_s"])


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
        rows.append({"p_A": p, "mean samples": n0 + float(np.mean([c.estimation for c in out])),
                     "max samples": n0 + int(max(c.estimation for c in out)), "fixed N": n0 + n_max,
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


# -- chapter 0's logs: cost, agreement with the reference, and where the samples go ---------------


def largest_certified(log, radii) -> list[str]:
    """Per image of a sequential log, the largest of ``radii`` at which its prediction is certified, as
    text (``"none"`` if none); the log holds one ``cert_<r>`` column per radius."""
    out = []
    for _, row in log.iterrows():
        top = max([r for r in radii if row[f"cert_{r:g}"]], default=None)
        out.append("none" if top is None else f"{top:g}")
    return out


def radius_categories(radii) -> list[str]:
    """The categories of :func:`largest_certified`, in order: ``none``, then each radius."""
    return ["none", *(f"{r:g}" for r in radii)]


def radius_palette(radii) -> dict[str, tuple]:
    """One colour per category of :func:`largest_certified`, the same in every panel."""
    import seaborn as sns

    cats = radius_categories(radii)
    colours = [(0.6, 0.6, 0.6), *sns.color_palette("colorblind", n_colors=len(cats) - 1)]  # "none" in grey
    return dict(zip(cats, colours))


def passes_per_image(log, kind: str, n0: int, n: int) -> float:
    """Forward passes per image (selection included): logged by a sequential run (``kind="sequential"``),
    ``n0 + n`` for a fixed-N one."""
    return float(log["samples"].mean()) if kind == "sequential" else float(n0 + n)


def method_table(logs: dict, sigmas, radii, n0: int, n_fix: int, n_ref: int, n_max: int, published: dict):
    """Certified accuracy at ``radii``, forward passes and wall time per image, and the machine, for
    each sigma and method: the paper's row (``published[sigma][r]``, N = 100,000), fixed N = ``n_fix``,
    sequential with ``n_max``, fixed N = ``n_ref`` on the reference subset, and the sequential run on
    that subset. ``logs[sigma]`` holds the ``sequential``, ``fixed`` and ``reference`` logs and their
    artifacts' metadata under ``meta``."""
    import pandas as pd

    from ..core.metrics import certified_accuracy

    rows = []
    for s in sigmas:
        L = logs[s]
        seq_sub = L["sequential"][L["sequential"]["idx"].isin(set(L["reference"]["idx"]))]
        variants = [
            ("Cohen et al. (published, N = 100,000)", None, None, None),
            (f"fixed N = {n_fix:,}", L["fixed"], "fixed", "fixed"),
            (f"sequential, n_max = {n_max:,}", L["sequential"], "sequential", "sequential"),
            (f"fixed N = {n_ref:,} (reference subset)", L["reference"], "reference", "reference"),
            ("sequential on the reference subset", seq_sub, "sequential", "sequential"),
        ]
        for name, log, kind, source in variants:
            if log is None:
                acc = [published[s][r] for r in radii]
                row = {"forward passes / image": 100_100.0, "s / image": float("nan"), "images": 500, "measured on": "(the paper)"}
            else:
                n = n_fix if kind == "fixed" else n_ref
                acc = certified_accuracy(log, radii)
                row = {"forward passes / image": passes_per_image(log, kind, n0, n), "s / image": float(log["time"].sum()) / len(log),
                       "images": len(log), "measured on": L["meta"][source]["provenance"]["device"]}
            rows.append({"sigma": f"{s:g}", "method": name, **{f"r = {r:g}": a for r, a in zip(radii, acc)}, **row})
    return pd.DataFrame(rows).set_index(["sigma", "method"])


def agreement_check(sequential, reference, radii, tol: float = 0.02, what: str = "") -> tuple[float, Check]:
    """Is the sequential certifier's certified accuracy within ``tol`` of fixed N's at every radius, over
    the test distribution? Both logs are paired on the reference images. At each radius the gap in
    certified accuracy is at most the share of images the two decide differently; at the radius with
    the most such images, that share's two-sided Clopper-Pearson interval (level :data:`LEVEL`)
    decides: the check *holds* when its upper end is at most ``tol``, *fails* when at some radius the
    observed gap exceeds ``tol`` and the paired sign test (:func:`rsbook.book.claims.greater`) finds
    one method certifying more images than the other, and is *undecided* otherwise. Returns the
    largest gap on these images and the :class:`Check`."""
    from ..core.metrics import certified_at

    ref = reference
    seq = sequential[sequential["idx"].isin(set(ref["idx"]))]
    if sorted(seq["idx"]) != sorted(ref["idx"]):
        raise ValueError("agreement_check needs the sequential log to hold every image of the reference log")
    gaps, discord, failed = [], [], False
    for r in radii:
        a, b = certified_at(seq, r), certified_at(ref, r)
        gaps.append(abs(a.mean() - b.mean()))
        discord.append(int((a != b).sum()))
        if gaps[-1] > tol + 1e-12 and (greater(a, b).outcome or greater(b, a).outcome):
            failed = True
    k = max(discord)
    r_star = radii[discord.index(k)]
    ci = proportion(k, len(ref), LEVEL)
    outcome = False if failed else (True if ci.high <= tol + 1e-12 else None)
    differ = (f"no image decided differently at any radius" if k == 0 else
              f"at most {k} of them decided differently at one radius (r = {r_star:g})")
    test = (f"{what}{': ' if what else ''}largest gap {max(gaps):.3f} on {len(ref)} images; {differ}, a share with "
            f"{LEVEL:.0%} Clopper-Pearson interval [{ci.low:.3f}, {ci.high:.3f}] "
            f"({'within' if ci.high <= tol + 1e-12 else 'not within'} {tol:g})")
    return float(max(gaps)), Check(outcome, test)


# -- the page's claims ----------------------------------------------------------------------------


def pass_ratios(logs: Mapping[float, Mapping[str, Any]], n0: int, n_max: int) -> dict[float, float]:
    """Per sigma of ``logs`` (as in :func:`method_table`), fixed N's forward passes per image, ``n0 + n_max``,
    over the sequential run's mean (:func:`passes_per_image`): how many times fewer the sequential run used."""
    return {s: (n0 + n_max) / passes_per_image(L["sequential"], "sequential", n0, n_max) for s, L in logs.items()}


def agreements(logs: Mapping[float, Mapping[str, Any]], radii, tol: float = 0.02) -> dict[float, tuple[float, Check]]:
    """Per sigma of ``logs``, :func:`agreement_check` of the sequential log against the reference log:
    ``(largest gap on the reference images, Check)``."""
    return {s: agreement_check(L["sequential"], L["reference"], radii, tol, what=f"sigma {s:g}") for s, L in logs.items()}


def claims(profile: str, logs: Mapping[float, Mapping[str, Any]], sound, bench: dict, bench_cfg: BenchConfig,
           reference_images: int) -> Claims:
    """The page's claims table (:mod:`rsbook.book.claims`) at ``profile``.

    ``logs``: per sigma, chapter 0's ``sequential`` and ``fixed`` logs and the ``reference`` log on
    the ``reference_images``-image subset (as in :func:`method_table`); ``sound``: the soundness table,
    one row per :func:`boundary_error_rates` with the columns ``"sequential: error"``, ``"naive CP looks:
    error"``, ``"alpha"`` and ``"slack (3 s.e.)"``; ``bench``: the ``rsbook bench sequential`` result
    of ``bench_cfg``.
    """
    S0, S = cohen2019.settings(profile), settings(profile)
    sigmas, n_fix, n_ref, n_max = list(logs), S0.n, S.n_reference, S0.n_max
    ratio = pass_ratios(logs, S0.n0, n_max)
    agree = agreements(logs, list(cohen2019.SEQUENTIAL.radii), 0.02)
    gap = {s: g for s, (g, _) in agree.items()}
    c = Claims(CHAPTER, profile)
    n_seq = len(logs[sigmas[0]]["sequential"])
    c.qualitative(f">= 10x fewer forward passes than fixed N = {n_max:,} (mean per image, n_max = {n_max:,})", "target (Voracek 2024: > 10x)",
                  ", ".join(f"{ratio[s]:.1f}x (sigma = {s:g})" for s in sigmas), [bool(ratio[s] >= 10) for s in sigmas],
                  test=f"per sigma: (n0 + N) / the mean forward passes per image logged by the sequential run on its {n_seq} test "
                       "images, at least 10 (a count on the stored logs, exact for these images)")
    c.qualitative(f"certified accuracy within 0.02 of fixed N = {n_ref:,} at every radius, same images", "target",
                  ", ".join(f"largest gap {gap[s]:.3f} (sigma = {s:g})" for s in sigmas),
                  [bool(gap[s] <= 0.02 + 1e-12) for s in sigmas] + [k for _, k in agree.values()],
                  why=(f"on the {reference_images}-image reference subset; the first checks are the gaps on these images, the others "
                       "ask whether the images establish the target for the test distribution: even with no image decided "
                       f"differently, {reference_images} images bound the share at {proportion(0, reference_images).high:.3f}, and it "
                       f"takes {math.ceil(math.log((1 - LEVEL) / 2) / math.log(1 - 0.02))} such images to bound it at 0.02"),
                  test="per sigma: the largest gap on these images is at most 0.02 (exact); then the Clopper-Pearson interval "
                       "of the share of images decided differently, which bounds the gap")
    slack = sound["slack (3 s.e.)"]
    c.qualitative("the sequential certifier is sound at the boundary (error <= alpha)", f"alpha = {S.boundary_alpha:g}",
                  ", ".join(f"{e:.4f}" for e in sound["sequential: error"]),
                  [bool(e <= a + sl) for e, a, sl in zip(sound["sequential: error"], sound["alpha"], slack)],
                  test=(f"per p: the error over {S.boundary_runs:,} runs is at most alpha + 3 s.e., "
                        "s.e. = sqrt(alpha (1 - alpha) / runs); "
                        "slack " + ", ".join(f"{sl:.4f}" for sl in slack)))
    c.qualitative("stopping when a fixed-n Clopper-Pearson bound clears is not sound (negative control)", f"error > alpha = {S.boundary_alpha:g}",
                  ", ".join(f"{e:.3f}" for e in sound["naive CP looks: error"]),
                  [bool(e > a + sl) for e, a, sl in zip(sound["naive CP looks: error"], sound["alpha"], slack)],
                  test=(f"per p: the error over {S.boundary_runs:,} runs exceeds alpha + 3 s.e., s.e. = sqrt(alpha (1 - alpha) / runs); "
                        "slack " + ", ".join(f"{sl:.4f}" for sl in slack)))
    for s, r in [(0.25, 0.75), (0.50, 1.5)]:
        if s in sigmas:
            seq_cap = max_certified_radius(Gaussian(s), n_max, S0.alpha)  # Clopper-Pearson's; the sequence's is slightly lower
            c.numeric(f"certified accuracy at r = {r}, sigma = {s:g} (sequential, n_max = {n_max:,})", cohen2019.COHEN_CIFAR10[s][r],
                      cohen2019.certified_estimate(logs[s]["sequential"], r), fmt="{:.3f}", comparable=r < seq_cap,
                      why=f"above the cap of fixed N = {n_fix:,}; our model is chapter 0's {S0.arch}, not ResNet-110"
                          + ("" if r < seq_cap else f"; r = {r} is above the cap {seq_cap:.2f} of n_max = {n_max:,} too"))
    bench_ct = bench["meta"]["contention"]
    c.qualitative(f"one run, same images: fewer forward passes than fixed N = {bench_cfg.n:,}", "target of the benchmark",
                  f"{bench['meta']['forward_pass_ratio']:.1f}x fewer forward passes ({bench_cfg.images} images)",
                  [bool(bench["meta"]["forward_pass_ratio"] > 1)],
                  test="a count of forward passes (exact; the machine's load cannot change it)")
    c.qualitative(f"one run, same images: less wall time than fixed N = {bench_cfg.n:,}", "target of the benchmark",
                  f"{bench['meta']['wall_ratio']:.1f}x less wall time ({bench_cfg.images} images)",
                  [Check(None, "the run was measured on a busy machine (" + "; ".join(bench_ct["reasons"]) + "): its wall times "
                               "are not evidence") if bench_ct["contended"] else bool(bench["meta"]["wall_ratio"] > 1)],
                  why=(f"measured on {bench['meta']['device']}, {bench['meta']['date']}"
                       + ("; contended, so undecided until it is rerun on an idle machine" if bench_ct["contended"] else "")),
                  test="fixed N's wall time over the sequential run's, above 1")
    return c


def setting_note(profile: str, images: int, reference_images: int) -> str:
    """The claims table's note: chapter 0's models and settings, on ``images`` test images (sequential and
    fixed N) and ``reference_images`` (the reference runs)."""
    S0, S = cohen2019.settings(profile), settings(profile)
    return (f"**Setting.** Chapter 0's {S0.arch} models, {images} test images (sequential, fixed N = {S0.n:,}), "
            f"{reference_images} (fixed N = {S.n_reference:,}); n0 = {S0.n0}, alpha = {S0.alpha:g}. Certified accuracies are proportions "
            "of test images certified correct at the radius; the margin in their rows is the allowance for chapter 0's smaller "
            "model and shorter training.")
