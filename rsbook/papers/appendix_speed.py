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
from typing import Callable

from ..infra.artifacts import ArtifactStore
from ..bench.certify import BenchConfig
from ..bench.common import write_json
from ..bench.denoised import DenoisedBenchConfig
from ..bench.dual import DualBenchConfig
from ..bench.load import ContentionError, is_contended
from ..book.claims import Check, Claims, exact
from ..book.eta import Plan
from ..book.profiles import TEMPORARY_PROFILES, check_profile
from ..infra.paths import repo_root
from . import cohen2019

__all__ = ["CHAPTER", "MIXED_SIGMAS", "chapter0_weights", "runs", "denoised_runs", "dual_runs", "dual_summary", "planned_work", "scaleout_results", "scaleout_live", "gpu_rates",
           "projected_paper_hours", "SCALEOUT_GPUS", "TARGET_RULE", "measured_on", "same_machine", "same_machine_words",
           "machines_sentence", "machine_load", "target_check", "target_words", "summary_table", "targets_table", "speedup_factors",
           "denoised_summary", "cpu_pair", "stored_result", "machines_note", "cpu_features_text", "speedup_note", "ENGINE_TARGET", "PAGE", "claims",
           "PAPER_MODULES", "Rate", "TrainingCost", "PlanHours", "cpu_rates", "training_kind", "training_size", "training_arch",
           "training_costs", "gpu_rate_for", "sequential_fraction", "project_plan", "paper_gpu_rates", "paper_run_plan"]

CHAPTER = "benchmark"  # the artifact folder: book/artifacts/benchmark/
PAGE = "A1_certification_speed"  # the page's notebook, whose claims table this module builds
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
    if profile == "dry_run":  # tiny, the paper's code paths once each (its N = 10,000 and 100,000 runs shrink to one)
        # ResNet-110 runs a few images/s on a CPU core, so a handful of samples per image
        tiny = [dataclasses.replace(c, device="cpu", n0=4, n=16, images=max(2, len(c.sigmas)),
                                    repeats=1, forward_seconds=0.1, compile="off", batch_size=8) for c in paper]
        return list(dict.fromkeys(tiny))
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
        # dry_run keeps the paper's networks (a width-128 U-Net, ResNet-110) on chapter 1's dry-run schedule, so its batches stay tiny
        return [dataclasses.replace(base, images=2, n0=2, n=8, repeats=1, forward_seconds=0.1, loop_samples=2, compile="off",
                                    batch_size=8, classifier="cnn4" if profile == "smoke" else "cifar_resnet110")]
    if profile == "cpu":
        return [dataclasses.replace(base, n=1000, images=4, repeats=3)]
    return [dataclasses.replace(base, classifier="cifar_resnet110", n=10_000, images=4, repeats=3, compile="auto")]


def dual_runs(profile: str, device: str = "cpu", seed: int = 0) -> list[DualBenchConfig]:
    """The ``rsbook bench dual`` runs (chapter 4's selector and classifier at the paper's N_h, N)."""
    check_profile(profile)
    base = DualBenchConfig(device=device, seed=seed)
    if profile in ("smoke", "dry_run"):
        return [dataclasses.replace(base, images=2, n_h=50, n0=5, n=20, repeats=1, forward_seconds=0.1, batch_size=8,
                                    classifier="cnn4" if profile == "smoke" else "cifar_resnet110")]
    if profile == "cpu":
        return [base]
    return [dataclasses.replace(base, classifier="cifar_resnet110", images=16)]


def dual_summary(res: dict) -> dict:
    """One ``bench dual`` result as a row: the certification over the ideal time of the raw forwards, its
    worst round, the target (>= 0.9) as a :class:`Check` in ``"checks"``, and the machine."""
    row = _rows(res)["dual certification"]
    contended = "; ".join(res["meta"]["contention"]["reasons"]) if is_contended(res) else ""
    check = target_check(row["ratio_to_forward"], row["worst_ratio"], 0.9, "dual certify / raw forward", contended)
    c = res["meta"]["config"]
    return {"classifier": c["classifier"], "n_h": c["n_h"], "n": c["n"], "images": c["images"],
            "certify / raw forward": row["ratio_to_forward"], "worst round": row["worst_ratio"],
            "target": f"{check.test.split(':')[0]} {target_words(check)}", "measured on": measured_on(res),
            "machine load": machine_load(res), "checks": [check]}


def planned_work(profile: str, device: str = "cpu", seed: int = 0) -> Plan:
    """The page's stored benchmark runs as a plan: the ``bench certify`` runs (:func:`runs`), the
    ``bench denoised`` runs (:func:`denoised_runs`) and the ``bench dual`` runs (:func:`dual_runs`) under
    ``other``, in the page's order. No model is trained and no certification log is stored here (the
    scale-out runs are not in the plan)."""
    return Plan(other=[*runs(profile, device, seed), *denoised_runs(profile, device, seed), *dual_runs(profile, device, seed)])


def stored_result(cfg: BenchConfig | DenoisedBenchConfig | DualBenchConfig, bench: Callable[..., dict], store: ArtifactStore, profile: str,
                  allow_busy: bool = False) -> dict:
    """The benchmark's result for ``cfg``: loaded from ``store``, or measured now by ``bench(cfg)``
    (:func:`rsbook.bench.certify.bench_certify` or :func:`~rsbook.bench.denoised.bench_denoised`). A run measured on a
    busy machine raises :class:`~rsbook.bench.load.ContentionError` instead of going into the committed
    store, unless ``allow_busy``; ``smoke`` and ``dry_run`` only show it."""

    def compute(out, work):
        result = bench(cfg)
        if is_contended(result) and not allow_busy and profile not in TEMPORARY_PROFILES:
            raise ContentionError("the machine was busy during this benchmark (" + "; ".join(result["meta"]["contention"]["reasons"])
                                  + "): its timings are not stored. Rerun on an idle machine, or pass -p allow_busy True.")
        write_json(result, out)
        return {"benchmark_date": result["meta"]["date"]}

    path, _ = store.load_or_compute(cfg, compute, "bench.json", device=cfg.device)
    return json.loads(path.read_text())

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

    from ..bench.scaleout import ScaleoutConfig, bench_scaleout

    check_profile(profile)
    if profile == "smoke":
        cfg = ScaleoutConfig(model="cnn4", images=3, n0=10, n=200, device="cpu", seed=seed, procs=(1, 2), threads=1)
    elif profile == "dry_run":
        cfg = ScaleoutConfig(model="cifar_resnet110", images=2, n0=4, n=16, device="cpu", seed=seed, procs=(1, 2), threads=1,
                             batch_size=8)
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

    from ..bench.scaleout import project
    from . import heat_smoothing, score_denoising

    rows = []
    for name, mod in (("0 (Cohen et al.)", cohen2019), ("1 (denoised smoothing)", score_denoising),
                      ("3 (HeatSmoothing)", heat_smoothing)):
        certs = mod.planned_work("paper").certifications
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


# -- reading the stored runs: which machine, how busy, and the targets' verdicts -------------------

#: How every target on the page is decided (shown on the page, beside the targets table).
TARGET_RULE = ("A target is *met* when even the worst case over the benchmark's rounds clears it: for a ratio of two "
               "throughputs, the slowest round of the numerator over the fastest round of the denominator (each run "
               "alternates the measurements for several rounds and stores each one's best, slowest and fastest round). "
               "It is *missed* when the stored value (each quantity's best round) is below it, and *undecided* when "
               "the rounds straddle it, or when the run was measured on a busy machine (contended). A benchmark that "
               "stores only its best round is decided on that value.")


def measured_on(res: dict) -> str:
    """The device that measured a stored benchmark result (``bench certify``/``denoised``/``sequential``
    record it in ``meta["device"]``, ``bench scaleout`` in ``meta["provenance"]["device"]``). Runs stored before
    :func:`rsbook.infra.provenance.device_name` said ``(1 thread)`` read as such (they said ``(1 threads)``)."""
    meta = res["meta"]
    device = meta.get("device") or meta.get("provenance", {}).get("device") or "not recorded"
    return device.replace("(1 threads)", "(1 thread)")


def same_machine(res: dict, here: str, here_features: dict | None = None) -> bool | None:
    """Whether ``res`` was measured on a machine like the one described by ``here`` (a
    :func:`rsbook.infra.provenance.device_name`) and ``here_features`` (:func:`rsbook.infra.provenance.cpu_features`,
    ``None`` for a GPU): ``False`` if the device names (CPU model and torch threads, or GPU name) or
    the recorded CPU instruction-set features differ, ``True`` if both agree, and ``None`` (cannot
    tell) for a CPU run that did not record its features, since CPU model names are often generic
    ("AMD EPYC"). The host itself is never recorded: ``True`` means "a machine of the same kind"."""
    if measured_on(res) != here:
        return False
    if here_features is None:  # a GPU: its name is the model
        return True
    feats = res["meta"].get("cpu_features")
    return None if feats is None else feats == here_features


def same_machine_words(verdict: bool | None) -> str:
    """:func:`same_machine` in words."""
    return {True: "yes", False: "no", None: "cannot tell (CPU features not recorded)"}[verdict]


def machines_sentence(runs: list[int], kinds: list[bool | None]) -> str:
    """Which ``runs`` were measured on a machine like this page's (``kinds``: :func:`same_machine` per run), in words.

    >>> machines_sentence([1, 2, 3], [None, None, False]).split("; ")[1]
    'run 3 was measured on another kind of machine.'
    """
    def named(sel):
        return ("run " if len(sel) == 1 else "runs ") + ", ".join(map(str, sel))

    same = [r for r, k in zip(runs, kinds) if k is True]
    other = [r for r, k in zip(runs, kinds) if k is False]
    unknown = [r for r, k in zip(runs, kinds) if k is None]
    parts = []
    if same:
        parts.append(f"{named(same)} {'was' if len(same) == 1 else 'were'} measured on a machine of that kind (same device name, "
                     "threads and CPU features; the host itself is not recorded)")
    if unknown:
        parts.append(f"{named(unknown)} did not record {'its' if len(unknown) == 1 else 'their'} CPU features, so whether "
                     f"{'it was' if len(unknown) == 1 else 'they were'} measured on a machine of that kind cannot be told")
    if other:
        parts.append(f"{named(other)} {'was' if len(other) == 1 else 'were'} measured on another kind of machine")
    return "; ".join(parts) + "."


def machine_load(res: dict) -> str:
    """How busy the machine was during a run's measured rounds, in words."""
    ct = res["meta"].get("contention")
    if ct is None:
        return "not recorded (this run predates the record)"
    if is_contended(res):
        return "contended: " + "; ".join(ct["reasons"])
    return f"idle (others used {ct['others']:.0%} of the CPUs)"


def target_check(value: float, worst: float | None, target: float, what: str, contended: str = "", fmt: str = "{:.3f}") -> Check:
    """A target ``value >= target`` decided by :data:`TARGET_RULE`: holds when ``worst`` (the worst
    case over the rounds; ``None`` when the run stores its best round only, which then decides) clears
    it, fails when ``value`` (the best round) does not, and is undecided when the rounds straddle the
    target or the run was ``contended`` (the reason, if any).

    >>> [target_check(v, w, 2.0, "x").outcome for v, w in ((2.76, 2.61), (1.996, 1.862), (2.418, 1.975))]
    [True, False, None]
    """
    shown = (f"{what}: {fmt.format(value)} " + ("(best round only)" if worst is None else f"(worst case over rounds {fmt.format(worst)})")
             + f", target {target:g}")
    worst = value if worst is None else worst
    if contended:
        return Check(None, f"{shown}: undecided, measured on a busy machine ({contended})")
    outcome = True if worst >= target else (False if value < target else None)
    return Check(outcome, f"{shown}: {target_words(Check(outcome, ''))}")


def target_words(check: Check) -> str:
    """``met`` / ``missed`` / ``undecided`` for a :func:`target_check`."""
    return {True: "met", False: "missed", None: "undecided"}[check.outcome]


def _features(meta: dict) -> str:
    f = meta.get("cpu_features")
    if not f:
        return "not recorded"
    return f"{f['torch_capability']} kernels" + (", AVX-512 BF16" if f.get("avx512_bf16") else "") + (", AMX" if f.get("amx_bf16") else "")


def _rows(res: dict) -> dict[str, dict]:
    return {r["variant"]: r for r in res["rows"]}


def _worst(num: dict, den: dict) -> float | None:
    """The worst case of ``num / den`` over the rounds: slowest ``num`` over fastest ``den`` (``None``
    when the run stores only each quantity's best round)."""
    if "per_s_min" not in num or "per_s_max" not in den:
        return None
    return num["per_s_min"] / den["per_s_max"]


def summary_table(results: list[dict]):
    """One row per ``bench certify`` result (``run`` 1, 2, ...): what was measured, the throughputs, the
    speedup and certify/forward ratio with their worst case over the rounds, the certificate check,
    and which machine measured it, when, and how busy it was."""
    import pandas as pd

    out = []
    for res in results:
        meta, m, eq = res["meta"], res["meta"]["config"], res["equivalence"]
        rows = _rows(res)
        ref, eng, fw = rows["reference loop (Cohen et al.)"], rows["Smooth.certify (engine)"], rows["raw forward, engine model"]
        out.append({
            "model": m["model"] + (" (random init)" if m["weights"] == "random" else " (trained)"),
            "noise": f"{len(m['sigmas'])} sigmas, one per image" if m.get("sigmas") else f"sigma = {m['sigma']}",
            "n0 + n": f"{m['n0']} + {m['n']:,}",
            "n": m["n"],
            "precision": m["precision"],
            "engine": fw["precision"].replace("channels_last", "ch.-last") + f", batch {eng['batch']}",
            "reference loop (samples/s)": ref["per_s"],
            "Smooth.certify (samples/s)": eng["per_s"],
            "speedup": eng["speedup"],  # the stored value, best round over best round
            "speedup, worst case": _worst(eng, ref),
            "certify / forward": eng["ratio_to_forward"],
            "certify / forward, worst case": _worst(eng, fw),
            "forward, engine (img/s)": fw["per_s"],
            "forward, plain (img/s)": rows["raw forward, reference model"]["per_s"],
            "certificates same / identical": f"{eq['same_prediction']} / {eq['identical_counts']} of {eq['images']}",
            "equivalent": bool(eq["equivalent"]),
            "set-up (s)": meta["setup_seconds"],
            "rounds spread": max(r["per_s_max"] / r["per_s_min"] for r in res["rows"]),
            "rsbook": f"{meta['rsbook']} ({meta['git_commit'][:7]})",
            "measured on": measured_on(res),
            "CPU features": _features(meta),
            "date": meta["date"],
            "gpu": not measured_on(res).startswith("cpu"),
            "machine load": machine_load(res),
            "contended": "; ".join(meta["contention"]["reasons"]) if is_contended(res) else "",
        })
    table = pd.DataFrame(out)
    table.index = pd.Index(range(1, len(table) + 1), name="run")
    return table


def targets_table(table):
    """The engine's targets per run of :func:`summary_table`, decided by :data:`TARGET_RULE`:
    certify / forward >= 0.9 (for N >= 1,000) and a speedup of 2x on a CPU, 10x on a GPU; returns
    ``(words, checks)``: the table in words and, per run, the two :class:`Check` (``None`` where a
    target does not apply)."""
    import pandas as pd

    words, checks = [], {}
    for i, row in table.iterrows():
        need = 10.0 if row["gpu"] else 2.0
        ratio = (None if row["n"] < 1000 else
                 target_check(row["certify / forward"], row["certify / forward, worst case"], 0.9, f"run {i} certify / forward",
                              row["contended"]))
        speed = target_check(row["speedup"], row["speedup, worst case"], need, f"run {i} speedup", row["contended"])
        checks[i] = (ratio, speed)
        words.append({
            "run": i, "model": row["model"], "noise": row["noise"], "engine": row["engine"], "measured on": row["measured on"],
            "certify / forward >= 0.9 (N >= 1,000)": "does not apply (N < 1,000)" if ratio is None else
            f"{row['certify / forward']:.3f} (worst case {row['certify / forward, worst case']:.3f}): {target_words(ratio)}",
            "speedup target": f"{need:.0f}x ({'GPU' if row['gpu'] else 'CPU'})",
            "speedup": f"{row['speedup']:.3f}x (worst case {row['speedup, worst case']:.3f}x): {target_words(speed)}",
            "equivalent certificates": "yes" if row["equivalent"] else "no",
            "machine load": row["machine load"],
        })
    return pd.DataFrame(words).set_index("run"), checks


def speedup_factors(table):
    """The speedup of each run as the product of three measured factors: plain forward / reference
    loop, engine forward / plain forward, certify / engine forward (their product is the speedup)."""
    import pandas as pd

    return pd.DataFrame({
        "model": table["model"], "noise": table["noise"], "engine": table["engine"],
        "plain forward / reference loop": table["forward, plain (img/s)"] / table["reference loop (samples/s)"],
        "engine forward / plain forward": table["forward, engine (img/s)"] / table["forward, plain (img/s)"],
        "certify / engine forward": table["certify / forward"],
        "= speedup": table["speedup"],
    })


def denoised_summary(res: dict) -> dict:
    """One ``bench denoised`` result as a row: both ratios to the raw forward, the multi-step engine over
    the one-sample loop, its ceiling (raw forward at the engine's batch over batch 1), the targets
    (>= 0.9 of the raw forward, >= 10x the loop) as :class:`Check` in ``"checks"``, and the machine."""
    rows, c = _rows(res), res["meta"]["config"]
    one, multi = rows["Smooth.certify, one-step"], rows["Smooth.certify, multi-step"]
    contended = "; ".join(res["meta"]["contention"]["reasons"]) if is_contended(res) else ""
    fw_one, fw_multi, loop = rows["raw forward, one-step"], rows["raw forward, multi-step"], rows["one-sample loop, multi-step"]
    checks = [target_check(one["ratio_to_forward"], _worst(one, fw_one), 0.9, "one-step certify / forward", contended),
              target_check(multi["ratio_to_forward"], _worst(multi, fw_multi), 0.9, "multi-step certify / forward", contended),
              target_check(multi["speedup"], _worst(multi, loop), 10.0, "multi-step engine / one-sample loop", contended)]
    return {"score width": c["width"], "classifier": c["classifier"], "L x T": f"{c['levels']} x {c['steps']}",
            "one-step: certify / forward": one["ratio_to_forward"],
            "multi-step: certify / forward": multi["ratio_to_forward"],
            "multi-step: engine / one-sample loop": multi["speedup"],
            "ceiling: forward at batch B / batch 1": rows["raw forward, multi-step, batch 1"]["speedup"],
            "targets": ", ".join(f"{t.test.split(':')[0]} {target_words(t)}" for t in checks),
            "measured on": measured_on(res), "machine load": machine_load(res), "checks": checks}


def cpu_pair(results: dict[str, dict]):
    """``(result, one-process row, two-process row)`` of a CPU scale-out run of 1 and 2 processes,
    preferring the run whose single process used every core; ``None`` if there is none."""
    pairs = []
    for res in results.values():
        rows = {r["procs"]: r for r in res["rows"]}
        if res["meta"]["provenance"]["device"].startswith("cpu") and 1 in rows and 2 in rows:
            pairs.append((rows[1]["threads_per_proc"] != res["meta"]["cpu_count"], res, rows[1], rows[2]))
    return min(pairs, key=lambda t: t[0])[1:] if pairs else None


# -- the page's prose from the stored runs, and its claims ---------------------------------------

#: The instruction-set features the bf16 paragraph names (``cpu_features`` key: name).
_FEATURE_NAMES = {"avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX BF16", "avx512_fp16": "AVX-512 FP16"}


def machines_note(results: list[dict], table, here: str, here_features: dict | None = None) -> str:
    """Which machines measured ``results`` (:func:`summary_table` is ``table``), with which torch and
    when, and whether each is like the machine building the page (``here``, ``here_features``: see
    :func:`same_machine`), in words."""
    kinds = [same_machine(r, here, here_features) for r in results]
    machines = sorted(set(table["measured on"]))
    dates = sorted(table["date"])
    return (f"Measured on {'; '.join(machines)} with torch {', '.join(sorted({r['meta']['torch'] for r in results}))}, "
            f"{dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "") + f". This page was built on {here}"
            + (f" ({here_features['torch_capability']})" if here_features else "") + "; "
            + machines_sentence(list(table.index), kinds))


def cpu_features_text(results: list[dict]) -> str:
    """The CPU instruction-set features (AVX-512, AMX) of the last run in ``results`` that records them, in words.

    >>> cpu_features_text([{"meta": {}}])
    "these runs did not record the CPU's instruction-set features."
    """
    feats = [r["meta"]["cpu_features"] for r in results if r["meta"].get("cpu_features")]
    if not feats:
        return "these runs did not record the CPU's instruction-set features."
    f = feats[-1]
    has = [v for k, v in _FEATURE_NAMES.items() if f.get(k)]
    lacks = [v for k, v in _FEATURE_NAMES.items() if not f.get(k)]
    return (f"the runs that record it were measured on a CPU with {', '.join(has) or 'none of AVX-512, AMX'}"
            + (f" and without {', '.join(lacks)}" if lacks else "") + f" (PyTorch dispatches to {f['torch_capability']}).")


def speedup_note(table, parts, target_checks: dict[int, tuple[Check | None, Check]]) -> str:
    """Why the CPU fp32 runs of ``table`` that miss the 2x target miss it (from :func:`speedup_factors`,
    ``parts``), and which ones straddle it (``target_checks``: :func:`targets_table`'s); ``""`` if none."""
    cpu_fp32 = [i for i in table.index if not table.loc[i, "gpu"] and table.loc[i, "precision"] == "fp32"]
    missed = [i for i in cpu_fp32 if target_checks[i][1].outcome is False]
    straddle = [i for i in cpu_fp32 if target_checks[i][1].outcome is None]
    lines = []
    if missed:
        short = parts.loc[missed]
        lines.append(f"Run{'s' if len(missed) > 1 else ''} {', '.join(map(str, missed))} miss the 2x CPU target. The engine is not "
                     f"the bottleneck in them: it certifies at {short['certify / engine forward'].min():.3f}-"
                     f"{short['certify / engine forward'].max():.3f} of its own raw forward speed. The product of the other two "
                     "factors is too small:")
        for i, r in short.iterrows():
            lines.append(f"* run {i} ({r['model']}): the reference loop loses only {r['plain forward / reference loop']:.3f}x "
                         f"against its model's best raw speed, and the engine's evaluation (channels_last, compilation) is "
                         f"{r['engine forward / plain forward']:.3f}x faster than the plain one, each at its best batch size.")
    if straddle:
        lines.append(("\n" if lines else "") + f"Run{'s' if len(straddle) > 1 else ''} {', '.join(map(str, straddle))} clear the target "
                     "with their best rounds (" + ", ".join(f"{table.loc[i, 'speedup']:.3f}x" for i in straddle) + ") but not in the "
                     "worst case over their rounds (" + ", ".join(f"{table.loc[i, 'speedup, worst case']:.3f}x" for i in straddle)
                     + "): the machine's speed varied too much during them to call the target met.")
    return "\n".join(lines)


#: What the page's targets are, in the claims table's "paper" column.
ENGINE_TARGET = "target of the engine (not a claim of the paper)"


def claims(profile: str, results: list[dict], table, den_checks: list[dict], identical: list[bool],
           rates: dict[str, tuple[float, str]], dual_checks: list[dict] = ()) -> Claims:
    """The page's claims table (:mod:`rsbook.book.claims`): the engine's targets and the paper's timing.

    ``results``: the ``bench certify`` results and ``table`` their :func:`summary_table`;
    ``den_checks``: :func:`denoised_summary` per ``bench denoised`` result; ``dual_checks``:
    :func:`dual_summary` per ``bench dual`` result; ``identical``: per
    multi-process scale-out run, whether its merged log equals the one-process log; ``rates``:
    :func:`gpu_rates`. The targets are decided by :data:`TARGET_RULE` (:func:`targets_table`).
    """
    c = Claims(PAGE, profile)
    _, target_checks = targets_table(table)
    old_runs = [i for i, r in zip(table.index, results) if "contention" not in r["meta"]]
    load_note = (f"; runs {', '.join(map(str, old_runs))} predate the machine-load record, so their load is unknown (each quantity "
                 "is its best round, which a busy machine only slows down)" if old_runs else "")
    c.qualitative("denoised certification (chapter 1) at >= 0.9 of the raw forward of denoiser + classifier", ENGINE_TARGET,
                  ", ".join(f"{d['one-step: certify / forward']:.3f} / {d['multi-step: certify / forward']:.3f} (one / multi-step)"
                            for d in den_checks), [k for d in den_checks for k in d["checks"][:2]],
                  why="; ".join(f"measured on {d['measured on']}, machine {d['machine load']}; this benchmark stores each "
                                "quantity's best round only, so the target is decided on it" for d in den_checks))
    c.qualitative("the batched multi-step denoiser at >= 10x a one-sample-at-a-time loop", ENGINE_TARGET,
                  ", ".join(f"{d['multi-step: engine / one-sample loop']:.3f}x" for d in den_checks), [d["checks"][2] for d in den_checks],
                  why="; ".join(f"on {d['measured on']}, batching gains at most {d['ceiling: forward at batch B / batch 1']:.3f}x "
                                "(raw forward at the engine's batch over batch 1, same run): a small convolutional network at "
                                "batch 1 already keeps the CPU's cores busy. The target assumes an accelerator, where batch 1 "
                                "leaves most of the device idle"
                                for d in den_checks if d["checks"][2].outcome is not True))
    if dual_checks:
        c.qualitative("dual-smoothing certification (chapter 4) at >= 0.9 of the raw forward of selector + classifier",
                      ENGINE_TARGET, ", ".join(f"{d['certify / raw forward']:.3f} (worst round {d['worst round']:.3f})"
                                               for d in dual_checks), [k for d in dual_checks for k in d["checks"]],
                      why="; ".join(f"measured on {d['measured on']}, machine {d['machine load']}" for d in dual_checks),
                      test="met if the worst round clears 0.9, missed if the best round is below it, else undecided")
    fp32 = [i for i in table.index if table.loc[i, "precision"] == "fp32"]
    long_runs = [i for i in fp32 if table.loc[i, "n"] >= 1000]
    c.qualitative("Smooth.certify runs at >= 0.9 of the model's raw forward throughput (fp32, N >= 1,000)", ENGINE_TARGET,
                  (f"{table.loc[long_runs, 'certify / forward'].min():.3f}-{table.loc[long_runs, 'certify / forward'].max():.3f} "
                   f"over {len(long_runs)} runs (worst case over rounds {table.loc[long_runs, 'certify / forward, worst case'].min():.3f}-"
                   f"{table.loc[long_runs, 'certify / forward, worst case'].max():.3f})") if long_runs else "no such run at this profile",
                  [target_checks[i][0] for i in long_runs] or [Check(None, "no such run at this profile")],
                  why="decided per run by the rule under the targets table: met only where even the worst case over the "
                      "rounds clears 0.9" + load_note,
                  test="per run: met if the worst case over rounds is at least 0.9, missed if the best round is below it, else undecided")
    cpu_runs = [i for i in fp32 if not table.loc[i, "gpu"]]
    c.qualitative(">= 2x the published loop on a CPU (fp32)", ENGINE_TARGET,
                  ", ".join(f"{table.loc[i, 'speedup']:.3f}x" for i in cpu_runs) or "no CPU run",
                  [target_checks[i][1] for i in cpu_runs] or [Check(None, "no CPU run at this profile")],
                  why="the runs that miss it are decomposed above; met only where even the worst case over the rounds clears 2x"
                      + load_note,
                  test="per run: met if the worst case over rounds is at least 2, missed if the best round is below it, else undecided")
    c.qualitative("certificates equal the published loop's (same noise, same counts up to float differences)", "property of the engine",
                  f"{int(table['equivalent'].sum())} of {len(table)} runs equivalent", list(table["equivalent"]),
                  test="per run: the engine's and the reference loop's certificates on the same images are statistically "
                       "equivalent (counts within Monte Carlo error; exact, not timed)")
    r110 = [i for i in fp32 if results[i - 1]["meta"]["config"]["model"] == "cifar_resnet110"]
    if r110:
        row = table.loc[r110[0]]
        c.numeric("seconds per CIFAR-10 image at n0 + n = 100 + 100,000, ResNet-110", cohen2019.COHEN_SECONDS_PER_IMAGE,
                  exact(100_100 / row["Smooth.certify (samples/s)"], "projected from a measured rate"), comparable=False, fmt="{:.0f}",
                  why=f"the paper's is one GPU; ours is projected from the rate measured on {row['measured on']} (run {r110[0]})")
    c.qualitative("a K-process torchrun run gives the one-process log (every column but the wall time)", "property of the runner",
                  f"{sum(identical)} of {len(identical)} multi-process runs identical", identical or [Check(None, "no multi-process run at this profile")],
                  test="per multi-process run: the merged log equals the one-process log in every column but the time (exact)")
    if "cifar_resnet110" in rates:
        rate, gpu = rates["cifar_resnet110"]
        c.numeric("seconds per CIFAR-10 image at n0 + n = 100 + 100,000, ResNet-110, one GPU", cohen2019.COHEN_SECONDS_PER_IMAGE,
                  exact(100_100 / rate, "projected from a measured rate"), comparable=False, fmt="{:.1f}",
                  why=f"measured on one {gpu} (fp32, eager, random weights: the rate does not depend on them); the paper's GPU is older")
    return c


# -- a paper run plan for every chapter: GPU hours from measured throughput -----------------------

#: The book's pages in order, by notebook name, with the module that plans each (A1 plans benchmarks only).
PAPER_MODULES = (("00_randomized_smoothing", "cohen2019"), ("01_denoised_smoothing", "score_denoising"),
                 ("02_samplewise_smoothing", "samplewise"), ("03_heat_smoothing", "heat_smoothing"),
                 ("04_variational_smoothing", "variational"), ("05_leaderboard", "leaderboard"),
                 ("A1_certification_speed", "appendix_speed"), ("A2_sequential_certification", "appendix_sequential"))


@dataclasses.dataclass(frozen=True)
class Rate:
    """A measured throughput (noise samples, i.e. forward passes, per second) and where it comes from, in words."""

    per_s: float
    source: str


@dataclasses.dataclass(frozen=True)
class TrainingCost:
    """What one training image costs per epoch, in certification forward passes of the measured architecture
    (seconds per image-epoch measured on a CPU times that CPU's certification rate for the same architecture and
    threads), and where it was measured, in words."""

    passes: float
    source: str
    arch: str = ""


@dataclasses.dataclass(frozen=True)
class PlanHours:
    """:func:`project_plan`'s answer for one plan: seconds on one GPU of the counted work, what was counted of how
    much, the rates used (words) and what could not be projected."""

    certification_s: float
    training_s: float
    certifications: tuple[int, int]  # counted, planned
    trainings: tuple[int, int]
    rate_from: tuple[str, ...]
    not_measured: tuple[str, ...]


def _threads(device: str) -> int | None:
    """The torch thread count in a recorded CPU device name (``"cpu: AMD EPYC (2 threads)"``), else ``None``."""
    import re

    m = re.search(r"\((\d+) threads?\)", device or "")
    return int(m.group(1)) if m else None


def cpu_rates(results: list[dict]) -> dict[tuple[str, int], float]:
    """``{(arch, threads): samples/s}`` measured on a CPU: the one-process rate of each CPU ``bench scaleout`` run
    and ``Smooth.certify``'s rate of each uncontended fp32 ``bench certify`` run (the best per key)."""
    out: dict[tuple[str, int], float] = {}
    for res in results:
        meta = res["meta"]
        arch, device = meta["config"].get("model"), measured_on(res)
        if not arch or not device.startswith("cpu") or is_contended(res):
            continue
        if "one_process_samples_per_s" in meta:
            one = [r for r in res["rows"] if r["procs"] == 1]
            rate, threads = meta["one_process_samples_per_s"], one[0]["threads_per_proc"] if one else None
        elif meta["config"].get("precision") == "fp32" and "Smooth.certify (engine)" in _rows(res):
            rate, threads = _rows(res)["Smooth.certify (engine)"]["per_s"], _threads(device)
        else:
            continue
        if rate and threads and rate > out.get((arch, threads), 0.0):
            out[(arch, threads)] = float(rate)
    return out


def _find(d: dict, key: str):
    """The first value of ``key`` in a nested config dict (breadth first), else ``None``."""
    todo = [d]
    while todo:
        x = todo.pop(0)
        if key in x and x[key] not in (None, ""):
            return x[key]
        todo += [v for v in x.values() if isinstance(v, dict)]
    return None


def training_kind(cfg: dict) -> tuple[str, str]:
    """``(kind, settings)`` of a training config (as a dict): what its cost per image-epoch depends on besides the
    architecture (the kind must match to use a measurement; settings that differ are named in the table)."""
    t = cfg.get("type") or ""
    if t == "DenoiserConfig":
        return f"{t} {cfg.get('arch')}", ""
    if t == "AdvConfig":
        return t, f"{cfg.get('method')} steps={cfg.get('steps')} m={cfg.get('m', 1)}"
    if t == "SelectorConfig":
        return t, f"n_h={cfg.get('n_h')}, n_f={cfg.get('n_f')}"
    if t == "HeatConfig":
        return t, f"imagenet_variant={cfg.get('imagenet_variant')}"
    return t, ""


def training_size(cfg: dict, train_sizes: dict[str, int]) -> tuple[int, int]:
    """``(images per epoch, epochs)`` of a training config (as a dict); a heat config trains
    ``timesteps * epochs_per_timestep`` epochs."""
    images = _find(cfg, "train_subset") or train_sizes[_find(cfg, "dataset")]
    epochs = cfg["timesteps"] * cfg["epochs_per_timestep"] if "timesteps" in cfg else cfg["epochs"]
    return int(images), int(epochs)


def training_arch(cfg: dict) -> str | None:
    """The architecture a training config trains (a denoiser's own; else the innermost classifier's)."""
    return cfg.get("arch") if cfg.get("type") == "DenoiserConfig" else _find(cfg, "arch")


def _as_dict(cfg) -> dict:
    return {"type": type(cfg).__name__, **dataclasses.asdict(cfg)} if dataclasses.is_dataclass(cfg) else dict(cfg)


def training_costs(metas: list[dict], rates: dict[tuple[str, int], float],
                   train_sizes: dict[str, int]) -> dict[tuple[str, str], list[TrainingCost]]:
    """``{(kind, settings): [TrainingCost]}`` from stored training artifacts' metadata (``history`` with per-epoch
    ``seconds``; runs cut to a few batches skipped): seconds per image-epoch times the CPU rate ``rates`` records for
    the same architecture and thread count (:func:`cpu_rates`). A run whose architecture and threads have no rate
    is skipped."""
    out: dict[tuple[str, str], list[TrainingCost]] = {}
    for meta in metas:
        cfg = meta.get("config", {})
        secs = [h["seconds"] for h in meta.get("history") or [] if "seconds" in h]
        if not secs or _find(cfg, "max_batches") or cfg.get("type") not in _TRAINING_TYPES:
            continue
        device = meta.get("device") or meta.get("provenance", {}).get("device", "")
        arch, threads = training_arch(cfg), _threads(device)
        if (arch, threads) not in rates:
            continue
        images = int(_find(cfg, "train_subset") or train_sizes[_find(cfg, "dataset")])  # the epochs are the history's
        passes = sum(secs) / (images * len(secs)) * rates[(arch, threads)]
        kind, what = training_kind(cfg)
        out.setdefault((kind, what), []).append(TrainingCost(passes, f"{arch}, {threads} thread{'s' * (threads > 1)}", arch))
    return out


_TRAINING_TYPES = ("TrainConfig", "DenoiserConfig", "SampleWiseConfig", "HeatConfig", "AdvConfig", "SelectorConfig")


def gpu_rate_for(arch: str, gpu: dict[str, Rate], cpu: dict[tuple[str, int], float]) -> Rate | None:
    """The GPU rate to project ``arch`` with: its own measured one, else, for an architecture that certifies at least
    as fast on this CPU as a GPU-measured one (same thread count), the rate of the slowest such GPU-measured one, an
    upper bound on the hours (labelled so); ``None`` (not measured) otherwise."""
    if arch in gpu:
        return gpu[arch]
    for threads in sorted({t for _, t in cpu}, reverse=True):
        mine = cpu.get((arch, threads))
        if mine is None:
            continue
        slower = [(cpu[(a, threads)], a) for a in gpu if (a, threads) in cpu and cpu[(a, threads)] <= mine]
        if slower:
            r, a = max(slower)
            return Rate(gpu[a].per_s, f"{a}'s rate {gpu[a].source}, an upper bound on the hours ({arch} certifies "
                                      f"{mine / r:.0f}x faster than {a} on this CPU)")
    return None


def _sequential(cfg) -> bool:
    return bool(getattr(cfg, "sequential", None))


def sequential_fraction(metas: list[dict]) -> float | None:
    """Measured forward passes per image of stored sequential logs over their ``n0 + n_max`` (mean over logs), from
    their metadata (``forward_passes``, ``images``); ``None`` if there is none."""
    fr = [m["forward_passes"] / (m["images"] * (m["config"]["n0"] + m["config"]["n"])) for m in metas
          if m.get("config", {}).get("sequential") and m.get("forward_passes") and m.get("images")]
    return sum(fr) / len(fr) if fr else None


def project_plan(plan: Plan, gpu: dict[str, Rate], cpu: dict[tuple[str, int], float],
                 costs: dict[tuple[str, str], list[TrainingCost]], train_sizes: dict[str, int],
                 sequential: tuple[float, str] | None = None, skip: frozenset[str] = frozenset()) -> PlanHours:
    """One plan's hours on one GPU from measured rates.

    * a certification log counts ``images * samples per image / rate`` (:func:`gpu_rate_for` of its ``arch``); a
      sequential log's samples per image are ``sequential = (fraction, source)`` of its ``n0 + n_max`` when given
      (a measured fraction, :func:`sequential_fraction`), else its planned guess;
    * a training counts ``passes * images * epochs / rate`` of its architecture: ``passes`` is the mean
      :class:`TrainingCost` measured for its kind (same settings if measured, else at other settings, named);
    * a config planned twice counts once (the store computes it once); configs whose
      :func:`~rsbook.infra.artifacts.config_key` is in ``skip`` (computed by an earlier chapter) are not counted, nor
      planned; work without a rate is listed under ``not_measured``.
    """
    from ..infra.artifacts import config_key

    cert_s, train_s, sources, missing = 0.0, 0.0, [], []
    certs = list({config_key(p.config): p for p in plan.certifications if config_key(p.config) not in skip}.values())  # stored once each
    counted_c = 0
    for p in certs:
        rate = gpu_rate_for(p.arch, gpu, cpu)
        if rate is None:
            missing.append(f"certifying {p.arch}")
            continue
        samples = _samples(p)
        if _sequential(p.config) and sequential is not None:
            samples = sequential[0] * (p.config.n0 + p.config.n)
            sources.append(f"sequential passes per image: {sequential[1]}")
        cert_s += p.images * samples / rate.per_s
        counted_c += 1
        sources.append(f"{p.arch}: {rate.source}")
    trains = list(dict.fromkeys(c for c in plan.trainings if config_key(c) not in skip))
    counted_t = 0
    for c in trains:
        d = _as_dict(c)
        kind, what = training_kind(d)
        arch = training_arch(d)
        same = costs.get((kind, what))
        other = [(w, x) for (k, w), xs in costs.items() if k == kind and w != what for x in xs]
        rate = gpu_rate_for(arch, gpu, cpu) if arch else None
        if rate is None or not (same or other):
            missing.append(f"training {kind.split()[-1] if kind.startswith('DenoiserConfig') else kind} ({arch})")
            continue
        used = same or [x for _, x in other]
        used = [x for x in used if x.arch == arch] or used  # the same architecture's measurements where there are any
        passes = sum(x.passes for x in used) / len(used)
        images, epochs = training_size(d, train_sizes)
        train_s += passes * images * epochs / rate.per_s
        counted_t += 1
        at = "" if same else f" at other settings ({', '.join(sorted({w for w, _ in other}))}; planned {what})"
        sources.append(f"training {kind} ({arch}): {passes:.1f} passes per image-epoch measured on CPU "
                       f"({'; '.join(sorted({x.source for x in used}))}){at}, projected at {arch}'s GPU rate")
    return PlanHours(cert_s, train_s, (counted_c, len(certs)), (counted_t, len(trains)),
                     tuple(dict.fromkeys(sources)), tuple(dict.fromkeys(missing)))


def _metas(chapter: str) -> list[dict]:
    from ..book.eta import stored_metadata
    from ..book.profiles import artifact_root

    return list(stored_metadata(ArtifactStore(artifact_root() / chapter))) if (artifact_root() / chapter).is_dir() else []


def paper_gpu_rates(scaleout: dict[str, dict]) -> dict[str, Rate]:
    """:func:`gpu_rates` as :class:`Rate` with its source in words."""
    return {a: Rate(r, f"measured on {d}") for a, (r, d) in gpu_rates(scaleout).items()}


def paper_run_plan(gpu: dict[str, Rate], cpu_results: list[dict], chapters: tuple[tuple[str, str], ...] = PAPER_MODULES,
                   seed: int = 0):
    """The ``paper`` run of every page: its command and its hours on one GPU from measured throughput.

    ``gpu``: measured GPU rates (:func:`paper_gpu_rates`); ``cpu_results``: CPU benchmark results (``bench
    certify`` and ``bench scaleout``; :func:`cpu_rates`), which, with the committed models' measured training seconds
    (their ``history``), give each training kind's cost in forward passes per image-epoch (:func:`training_costs`).
    GPU training was never measured: it is projected as that many passes at the GPU rate of the architecture trained,
    i.e. assuming training costs the same multiple of a certification pass on the GPU as on the CPU that measured it.
    Pages run in book order and a page does not count work an earlier page's plan already holds (chapter 2 uses
    chapter 0's models, for example). Sequential logs (chapter 0, the leaderboard) count the measured passes per
    image of the stored sequential logs: the leaderboard's own where stored, else chapter 0's (those A2 reads).
    Columns: ``chapter``, ``command``, ``certification (GPU h)``, ``training (GPU h)``, ``total (GPU h)`` (of the
    counted work; ``NaN`` where none of it has a rate), ``counted``, ``rate from``, ``notes``.
    """
    import importlib

    import pandas as pd

    from ..infra.artifacts import config_key
    from ..infra.data import TRAIN_SIZES

    cpu = cpu_rates(cpu_results)
    metas = {ch: _metas(ch) for ch, _ in chapters if ch != PAGE}
    costs: dict[tuple[str, str], list[TrainingCost]] = {}
    for ms in metas.values():
        for k, v in training_costs(ms, cpu, TRAIN_SIZES).items():
            costs.setdefault(k, []).extend(v)
    ch0 = sequential_fraction(metas.get(cohen2019.CHAPTER, []))
    done: set[str] = set()
    rows = []
    for chapter, name in chapters:
        command = f"rsbook run {chapter} -p profile paper -p device cuda"
        if name == "appendix_speed":
            rows.append({"chapter": chapter, "command": command, "certification (GPU h)": float("nan"),
                         "training (GPU h)": 0.0, "total (GPU h)": float("nan"), "counted": "benchmarks only",
                         "rate from": "-", "notes": "not measured: its paper runs are benchmarks, whose cost is what they "
                                                    "measure (the committed H200 runs above are their scale-out part)"})
            continue
        mod = importlib.import_module(f"rsbook.papers.{name}")
        plan = mod.planned_work("paper", seed=seed)
        seq, notes = None, []
        if any(_sequential(p.config) for p in plan.certifications):
            own = sequential_fraction(metas.get(chapter, [])) if chapter != cohen2019.CHAPTER else None
            if own is not None:
                seq = (own, f"{own:.3f} of n0 + n_max, measured by this page's stored cpu logs")
            elif ch0 is not None:
                seq = (ch0, f"{ch0:.3f} of n0 + n_max, measured by chapter 0's stored cpu sequential logs (CNN models)")
            else:
                notes.append("sequential logs at their planned guess of passes per image (no sequential log stored)")
        h = project_plan(plan, gpu, cpu, costs, TRAIN_SIZES, seq, frozenset(done))
        done |= {config_key(p.config) for p in plan.certifications} | {config_key(c) for c in plan.trainings}
        if h.not_measured:
            notes.append("not measured (not counted): " + ", ".join(h.not_measured))
        if plan.other:
            kinds = sorted({type(o).__name__ for o in plan.other})
            notes.append(f"not counted: {len(plan.other)} other artifacts ({', '.join(kinds)})")
        skipped = len(set(map(config_key, plan.trainings))) - h.trainings[1]
        if skipped:
            notes.append(f"{skipped} models are earlier chapters' (run those first)")
        reused = len({config_key(p.config) for p in plan.certifications}) - h.certifications[1]
        if reused:
            notes.append(f"{reused} certification logs are earlier chapters' (counted there)")
        counted = h.certifications[0] + h.trainings[0]
        rows.append({"chapter": chapter, "command": command, "certification (GPU h)": h.certification_s / 3600,
                     "training (GPU h)": h.training_s / 3600,
                     "total (GPU h)": float("nan") if h.not_measured and not counted else (h.certification_s + h.training_s) / 3600,
                     "counted": f"certifications {h.certifications[0]} of {h.certifications[1]}, trainings "
                                f"{h.trainings[0]} of {h.trainings[1]}",
                     "rate from": "; ".join(h.rate_from) or "-", "notes": "; ".join(notes) or "-"})
    return pd.DataFrame(rows)
