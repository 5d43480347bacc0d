"""Chapter 5 (the leaderboard): every method of the book, certified on the same CIFAR-10 test images
with the same ``n0``, ``alpha`` and the paper's ``N``, through one engine.

No paper compares these methods with each other: each uses its own model, N, alpha and test
subset. Here every row that is a smoothed classifier is certified by the **sequential certifier**
(:mod:`rsbook.core.sequential`) with ``n_max`` = the paper's N = 100,000 and alpha = 0.001,
deciding the table's radii; a few rows whose certificate is not Cohen's (the transductive and
inductive ones of chapter 2, the deterministic L-bound of chapter 3) are computed from those logs,
and rows too costly for the profile (the denoisers, chapter 4's dual smoothing) are loaded from
their chapters' logs at those chapters' N and shown apart, labelled.

Which confidence sequence certifies the leaderboard is chosen on a **held-out calibration set**
(test images that are not the leaderboard's): the one with fewer forward passes there
(:func:`calibration`, :func:`chosen_sequence`), never on the leaderboard's own images.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..book.profiles import chapter_store, check_profile
from ..core.certify import Smooth
from ..core.noise import Gaussian, Noise, make_noise
from ..core.sequential import SEQUENCES, Sequential
from ..infra.artifacts import ArtifactStore
from ..infra.data import ImageDataset, test_subset
from ..runs.runner import CertifyConfig, NoiseTable, certification_log, certify_dataset, read_log
from . import cohen2019, heat_smoothing, samplewise, score_denoising

__all__ = ["CHAPTER", "RADII", "GUARANTEES", "Settings", "settings", "store", "Calibration", "calibration_configs",
           "calibration", "chosen_sequence", "Row", "rows", "row_config", "row_log", "leaderboard_images"]

CHAPTER = "05_leaderboard"

#: The leaderboard's radii (l2 for Gaussian rows, l1 for Laplace and uniform rows).
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)

#: What a row's certificate guarantees, from strongest to none.
GUARANTEES = ("fixed noise", "class given", "transductive", "inductive", "not a guarantee")


@dataclass(frozen=True)
class Settings:
    """The leaderboard's settings at one profile (the models are the chapters' own at that profile).

    ``every``: the leaderboard's CIFAR-10 test images; ``calibration_*``: the held-out images that
    choose the confidence sequence (every ``calibration_every``-th from ``calibration_start``, the
    first ``calibration_images``; none of them is a leaderboard image).
    """

    every: int = 200
    n0: int = 100
    n_max: int = 100_000
    alpha: float = 0.001
    calibration_sigma: float = 0.25
    calibration_start: int = 100
    calibration_every: int = 200
    calibration_images: int = 20
    l1: tuple[str, ...] = ("laplace", "uniform")  # the white-box l1 rows
    sigmas: tuple[float, ...] = ()  # chapter 0's sigmas on the board (empty: all of chapter 0's)
    denoisers: tuple[str, ...] = ("one_step", "multi_step", "dncnn")  # chapter 1's rows at its own N
    variational: bool = True  # chapter 4's rows at its own N
    all_rows: bool = True  # the universal model's and SmoothAdv's rows (off at smoke and dry_run: their kinds are covered)
    batch_size: int | None = None


_SETTINGS = {
    # CI: one row of each kind, the chapters' models at their smoke profiles
    "smoke": Settings(every=2500, n0=10, n_max=2000, calibration_start=1000, calibration_every=2500, calibration_images=2,
                      batch_size=128, l1=("laplace",), sigmas=(0.25,), denoisers=("one_step",), variational=False,
                      all_rows=False),
    # the published book: 50 images; the white-box l1 rows at n_max = N did not fit the session's budget
    "cpu": Settings(l1=()),
    "paper": Settings(every=20, calibration_start=10, calibration_every=20, calibration_images=100),
}


def settings(profile: str) -> Settings:
    """``dry_run`` is ``paper`` with tiny sizes (derived here, so it cannot drift)."""
    check_profile(profile)
    if profile == "dry_run":
        return dataclasses.replace(_SETTINGS["paper"], every=5000, n0=4, n_max=200, calibration_start=2500,
                                   calibration_every=5000, calibration_images=1, batch_size=32, l1=(), sigmas=(0.25,),
                                   denoisers=("one_step",), variational=False, all_rows=False)
    return _SETTINGS[profile]


def store(profile: str, recompute: bool = False) -> ArtifactStore:
    """The leaderboard's own artifact store (calibration and the leaderboard's sequential logs)."""
    return chapter_store(CHAPTER, profile, recompute)


def leaderboard_images(profile: str) -> ImageDataset:
    """The leaderboard's test images: every ``every``-th CIFAR-10 test image."""
    return test_subset("cifar10", settings(profile).every)


def _sequential(sequence: str) -> Sequential:
    """The leaderboard's certifier: chapter 0's (decide at Cohen's table radii) with ``sequence``."""
    return dataclasses.replace(cohen2019.SEQUENTIAL, sequence=sequence)


# -- choosing the confidence sequence on held-out images -------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A sequential certification of chapter 0's ``sigma`` CNN on the calibration images (held out
    from the leaderboard) with one confidence ``sequence``."""

    model: Any
    sigma: float
    sequence: str
    n0: int
    n_max: int
    alpha: float
    start: int
    every: int
    images: int
    seed: int = 0


def calibration_configs(profile: str, seed: int = 0) -> list[Calibration]:
    """One :class:`Calibration` per confidence sequence of :data:`~rsbook.core.sequential.SEQUENCES`."""
    s = settings(profile)
    model = cohen2019.cifar_config(s.calibration_sigma, profile, seed=seed)
    return [Calibration(model, s.calibration_sigma, seq, s.n0, s.n_max, s.alpha, s.calibration_start, s.calibration_every,
                        s.calibration_images, seed) for seq in SEQUENCES]


def calibration_images(cfg: Calibration) -> ImageDataset:
    """The calibration images of ``cfg``: every ``every``-th test image from ``start``, the first ``images``."""
    if cfg.start % cfg.every == 0:
        raise ValueError("the calibration images must not be leaderboard images: start must not be a multiple of every")
    data = test_subset("cifar10", 20) if cfg.start % 20 == 0 and cfg.every % 20 == 0 else test_subset("cifar10", 1)
    step = 20 if len(data) == 500 else 1
    pos = np.arange(cfg.start // step, len(data), cfg.every // step)[: cfg.images]
    return data.subset(pos)


def calibration(cfg: Calibration, profile: str, device: torch.device | str = "cpu", progress: bool = True) -> pd.DataFrame:
    """The log of ``cfg`` (loaded, or computed resumably and stored)."""
    st = store(profile)

    def compute(out, work):
        smooth = cohen2019.smooth(cfg.model, cohen2019.store(profile), device, progress)
        log = certify_dataset(smooth, calibration_images(cfg), cfg.n0, cfg.n_max, cfg.alpha, settings(profile).batch_size,
                              work / "log.partial.tsv", cfg.seed, progress, noise=Gaussian(cfg.sigma),
                              sequential=_sequential(cfg.sequence))
        log.to_csv(out, sep="\t", index=False)
        return {"images": len(log), "certify_seconds": float(log["time"].sum()), "forward_passes": int(log["samples"].sum())}

    path, _ = st.load_or_compute(cfg, compute, "tsv", device=device)
    return read_log(path)


def chosen_sequence(logs: dict[str, pd.DataFrame]) -> str:
    """The sequence with the fewest forward passes on the calibration images (ties: the first of
    :data:`~rsbook.core.sequential.SEQUENCES`, the Beta-binomial one)."""
    totals = {seq: int(logs[seq]["samples"].sum()) for seq in SEQUENCES if seq in logs}
    return min(totals, key=lambda k: (totals[k], SEQUENCES.index(k)))


# -- the rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One leaderboard row: a method, the chapter it comes from, its guarantee and its norm.

    ``source`` is ``"sequential"`` (certified here at the paper's N), ``"derived"`` (computed from
    another row's log: ``of``), or ``"chapter"`` (the chapter's own log at the chapter's N).
    """

    name: str
    chapter: str
    guarantee: str
    norm: str = "l2"
    source: str = "sequential"
    of: str = ""
    sigma: float | None = None

    def __post_init__(self) -> None:
        if self.guarantee not in GUARANTEES:
            raise ValueError(f"guarantee must be one of {GUARANTEES}, got {self.guarantee!r}")


def rows(profile: str) -> list[Row]:
    """The leaderboard's rows at ``profile``, in the table's order."""
    s = settings(profile)
    c0, heat = cohen2019.settings(profile), heat_smoothing.settings(profile)
    out = [Row(f"Cohen, sigma = {sg:g}", "00_randomized_smoothing", "fixed noise", sigma=sg) for sg in (s.sigmas or c0.sigmas)]
    if s.all_rows:
        out += [Row(f"Cohen, universal model, sigma = {max(c0.sequential_sigmas):g}", "00_randomized_smoothing", "fixed noise",
                    sigma=max(c0.sequential_sigmas))]
    out += [Row(f"HeatSmoothing, sigma = {heat.sigma:g}", "03_heat_smoothing", "class given", sigma=heat.sigma)]
    if s.all_rows:
        out += [Row(f"SmoothAdv, sigma = {heat.sigma:g}", "03_heat_smoothing", "fixed noise", sigma=heat.sigma)]
    out += [Row("Sample-wise, Cohen at its own sigma", "02_samplewise_smoothing", "not a guarantee"),
            Row("Sample-wise, transductive (LP)", "02_samplewise_smoothing", "transductive", source="derived",
                of="Sample-wise, Cohen at its own sigma"),
            Row("Sample-wise, inductive", "02_samplewise_smoothing", "inductive", source="derived",
                of="Sample-wise, Cohen at its own sigma")]
    out += [Row(f"White-box {nz}, sigma = 0.5", "01_denoised_smoothing", "fixed noise", norm="l1", sigma=0.5) for nz in s.l1]
    return out


def _row(name: str, profile: str) -> Row:
    for r in rows(profile):
        if r.name == name:
            return r
    raise KeyError(f"no leaderboard row {name!r} at profile {profile!r}; the rows are {[r.name for r in rows(profile)]}")


def _noise_of(row: Row) -> Noise:
    return make_noise(row.name.split("White-box ")[1].split(",")[0], row.sigma) if row.norm == "l1" else Gaussian(row.sigma)


def _model_and_smooth(row: Row, profile: str, device, progress: bool, seed: int) -> tuple[Any, Callable[[], Smooth], str]:
    """``(model config, Smooth factory, selection)`` of a sequential row."""
    if row.chapter == "00_randomized_smoothing":
        mode = "universal" if "universal" in row.name else "fixed"
        sg = cohen2019.settings(profile).universal_sigma if mode == "universal" else row.sigma
        model = cohen2019.cifar_config(sg, profile, mode, seed=seed)
        return model, lambda: cohen2019.smooth(model, cohen2019.store(profile), device, progress), "noise"
    if row.chapter == "03_heat_smoothing":
        name = "heat" if row.name.startswith("HeatSmoothing") else "smoothadv"
        cfg = heat_smoothing.certify_config(name, profile, seed)
        return cfg.model, lambda: Smooth(heat_smoothing.load_model(name, profile, device, seed, progress), 10), cfg.selection
    if row.chapter == "02_samplewise_smoothing":
        model = samplewise.finetune_config("cifar10", profile, seed)
        return model, lambda: Smooth(samplewise.load_model(model, profile, device, progress), 10), "noise"
    if row.chapter == "01_denoised_smoothing":
        model = score_denoising.white_box_config(_noise_of(row).name, row.sigma, profile, seed)
        return model, lambda: Smooth(score_denoising.certified_model(model, _noise_of(row).name, score_denoising.store(profile),
                                                                      device, progress), 10), "noise"
    raise ValueError(f"row {row.name!r} is not certified here")


def sample_sigmas(profile: str, device: torch.device | str = "cpu", progress: bool = True, seed: int = 0,
                  stand_in: bool = False) -> NoiseTable:
    """Chapter 2's test-time level of every leaderboard image (its stored table, restricted here;
    computed first if absent, or with ``stand_in`` a placeholder table, for a plan's estimate)."""
    s = settings(profile)
    cfg = samplewise.test_sigmas_config("cifar10", profile, seed)
    if s.every % cfg.every:
        cfg = dataclasses.replace(cfg, every=s.every)
    if stand_in and not samplewise.store(profile).exists(cfg, "tsv"):
        return NoiseTable.of({0: Gaussian(1.0)})
    table = samplewise.test_sigmas(cfg, profile, device, progress)
    keep = table[table["idx"] % s.every == 0]
    return NoiseTable.of({int(i): Gaussian(float(sg)) for i, sg in zip(keep["idx"], keep["sigma"])})


def row_config(row: Row, sequence: str, profile: str, seed: int = 0, device: torch.device | str = "cpu",
               progress: bool = True, stand_in: bool = False) -> CertifyConfig:
    """The sequential certification of a row at the paper's N on the leaderboard's images
    (``stand_in``: see :func:`sample_sigmas`)."""
    s = settings(profile)
    model, _, selection = _model_and_smooth(row, profile, device, progress, seed)
    rule = sample_sigmas(profile, device, progress, seed, stand_in) if row.sigma is None else None
    return CertifyConfig(model=model, noise=None if rule is not None else _noise_of(row), n0=s.n0, n=s.n_max, alpha=s.alpha,
                         dataset="cifar10", every=s.every, seed=seed, selection=selection, sequential=_sequential(sequence),
                         noise_rule=rule)


def _reusable(cfg: CertifyConfig, profile: str) -> tuple[ArtifactStore, CertifyConfig] | None:
    """Chapter 0's stored sequential log of the same model on a superset of the images, if any
    (its every-20th run holds every 200th image; per image, a sequential result depends only on
    that image's own draws, so the restriction is the run on the subset)."""
    if cfg.noise_rule is not None or cfg.sequential is None:
        return None
    c0 = cohen2019.store(profile)
    for every in (20, 100):
        if cfg.every % every == 0 and every < cfg.every:
            sup = dataclasses.replace(cfg, every=every)
            if c0.exists(sup, "tsv"):
                return c0, sup
    return None


def row_log(row: Row, sequence: str, profile: str, device: torch.device | str = "cpu", progress: bool = True,
            seed: int = 0) -> pd.DataFrame:
    """The row's sequential log on the leaderboard's images (loaded, reused from chapter 0's store
    where it holds the same run on more images, or computed resumably and stored)."""
    s = settings(profile)
    cfg = row_config(row, sequence, profile, seed, device, progress)
    reuse = _reusable(cfg, profile)
    if reuse is not None:
        st, sup = reuse
        path, _ = st.paths(sup, "tsv")
        log = read_log(path)
        return _decided_radii(log[log["idx"] % s.every == 0].reset_index(drop=True))
    _, smooth, _ = _model_and_smooth(row, profile, device, progress, seed)
    log = certification_log(cfg, smooth(), leaderboard_images(profile), store(profile), batch_size=s.batch_size,
                            progress=progress)
    return _decided_radii(log)


def _decided_radii(log: pd.DataFrame) -> pd.DataFrame:
    """A sequential log whose radius is at least the largest radius it decided certified (``cert_<r>``):
    the betting bound sits exactly on a radius's threshold, whose radius float rounding may put a
    hair below ``r`` (logs computed before the certifier did this itself)."""
    cols = [c for c in log.columns if c.startswith("cert_")]
    if not cols:
        return log
    r = np.array([float(c[5:]) for c in cols])
    decided = np.where(log[cols].to_numpy().astype(bool), r[None, :], 0.0).max(axis=1)
    out = log.copy()
    out["radius"] = np.where(out["predict"] >= 0, np.maximum(out["radius"].to_numpy(), decided), out["radius"])
    return out


def reference_log(sigma: float, profile: str, device: torch.device | str = "cpu", progress: bool = True,
                  seed: int = 0) -> pd.DataFrame:
    """Appendix A2's fixed-N reference log of chapter 0's ``sigma`` CNN (its reference images are the
    leaderboard's: every ``reference_every``-th test image), restricted to the leaderboard's images."""
    from . import appendix_sequential as a2

    cfg = a2.reference_config(sigma, profile, seed)
    st = a2.reference_store(cfg, profile)  # the log's store; the model is chapter 0's
    smooth = cohen2019.smooth(cfg.model, cohen2019.store(profile), device, progress)
    log = certification_log(cfg, smooth, test_subset("cifar10", cfg.every), st, batch_size=cohen2019.settings(profile).certify_batch,
                            progress=progress)
    return log[log["idx"] % settings(profile).every == 0].reset_index(drop=True)


# -- the table ----------------------------------------------------------------------------------------


def derived_log(row: Row, base: pd.DataFrame, profile: str) -> pd.DataFrame:
    """A derived row's per-image ``(idx, label, predict, radius, correct)`` from its base row's log:
    chapter 2's transductive LP allocation, or its inductive certificate over the level grid's range."""
    out = base[["idx", "label", "predict", "radius", "correct", "time", "samples", "noise", "sigma"]].copy()
    if row.guarantee == "transductive":
        t = samplewise.transductive(base, "cifar10").set_index("idx").loc[base["idx"]]
        out["radius"] = t["lp"].to_numpy()
    elif row.guarantee == "inductive":
        grid = samplewise.settings(profile).grid("cifar10")
        rad = samplewise.inductive(base, "cifar10", min(grid), max(grid))
        out["radius"] = np.nan_to_num(rad, nan=0.0)
        out.loc[np.isnan(rad), "predict"] = -1
        out["correct"] = (out["predict"] == out["label"]).astype(int)
    else:
        raise ValueError(f"row {row.name!r} is not derived")
    return out


def board(logs: dict[str, pd.DataFrame], board_rows: list[Row], radii: tuple[float, ...] = RADII,
          train_seconds: dict[str, float] | None = None) -> pd.DataFrame:
    """The leaderboard: per row, certified accuracy at ``radii``, ACR, clean accuracy (the base
    smoothed classifier's prediction, abstentions wrong), abstain rate, forward passes and seconds per
    image, training seconds and the guarantee."""
    from ..core.metrics import abstain_rate, acr, certified_accuracy

    out = {}
    for row in board_rows:
        log = logs[row.name]
        r = {f"r = {x:g}": a for x, a in zip(radii, certified_accuracy(log, radii))}
        r["ACR"] = acr(log)
        r["clean acc"] = float((log["predict"] == log["label"]).mean())
        r["abstain"] = abstain_rate(log)
        r["passes / image"] = float(log["samples"].mean()) if "samples" in log else np.nan
        r["s / image"] = float(log["time"].mean()) if "time" in log else np.nan
        r["train s"] = (train_seconds or {}).get(row.name, np.nan)
        r["guarantee"] = row.guarantee
        r["norm"] = row.norm
        r["images"] = len(log)
        out[row.name] = r
    return pd.DataFrame.from_dict(out, orient="index")


def pass_ratio(logs: dict[str, pd.DataFrame], board_rows: list[Row], n0: int, n_max: int) -> dict[str, float]:
    """Forward passes of fixed N = ``n_max`` (with ``n0`` selection samples; none where the class is
    given) over those the sequential certifier used, over every sequential row together (``"all"``) and per row."""
    out, fixed_all, seq_all = {}, 0.0, 0.0
    for row in board_rows:
        if row.source != "sequential":
            continue
        log = logs[row.name]
        fixed = len(log) * (n_max + (0 if row.guarantee == "class given" else n0))
        used = float(log["samples"].sum())
        out[row.name] = fixed / used
        fixed_all, seq_all = fixed_all + fixed, seq_all + used
    out["all"] = fixed_all / seq_all
    return out


# -- the certificate audit of every row ------------------------------------------------------------


@dataclass(frozen=True)
class Audit:
    """The audit of one row's certificate (:mod:`rsbook.methods.audit`): every image certified correct
    is attacked along the direction of foolbox's DDN on the row's base network, and the deployed
    smoothed classifier (Monte-Carlo ``predict`` with ``n`` draws at ``alpha``; the sample-wise rows
    choose each point's own level first, as deployed) is asked at ``steps`` distances up to
    ``factor`` times the radius. ``radii`` names the certificate audited (``"certified"``: the row's;
    the page also audits the naive sample-wise radii)."""

    certification: CertifyConfig
    row: str
    radii: str = "certified"
    n: int = 200
    alpha: float = 1e-6
    steps: int = 9
    factor: float = 3.0
    attack_steps: int = 20


def audit_config(row: Row, sequence: str, profile: str, seed: int = 0, device: torch.device | str = "cpu",
                 stand_in: bool = False) -> Audit:
    """The audit of ``row`` (the settings are the page's; smaller at ``smoke`` and ``dry_run``)."""
    base = row if row.source == "sequential" else _row(row.of, profile)
    small = profile in ("smoke", "dry_run")
    return Audit(row_config(base, sequence, profile, seed, device, False, stand_in), row.name, n=20 if small else 200,
                 steps=3 if small else 9, attack_steps=3 if small else 20)


def audit(cfg: Audit, radius: pd.DataFrame, profile: str, device: torch.device | str = "cpu",
          progress: bool = True) -> pd.DataFrame:
    """Per image certified correct in ``radius`` (``idx``, ``label``, ``radius``): the smallest audited
    distance at which the deployed classifier answered a wrong class (``inf``: none), and the number of
    ``predict`` calls. Loaded, or computed and stored."""
    from ..core.engine import Item
    from ..core.streams import stream
    from ..methods.audit import first_wrong_on_grid
    from ..methods.distances import adversarial_distances
    from ..methods.samplewise import choose_sigmas

    row = _row(cfg.row, profile)
    base = row if row.source == "sequential" else _row(row.of, profile)
    seed = cfg.certification.seed

    def compute(out, work):
        t0 = time.perf_counter()
        _, smooth_of, _ = _model_and_smooth(base, profile, device, progress, seed)
        smooth = smooth_of()
        keep = radius[(radius["correct"] == 1) & (radius["radius"] > 0)]
        data = leaderboard_images(profile)
        pos = {int(i): p for p, i in enumerate(data.indices.tolist())}
        idx = [int(i) for i in keep["idx"]]
        x = torch.stack([data[pos[i]][0] for i in idx]).to(device) if idx else torch.zeros(0)
        y = torch.as_tensor([int(v) for v in keep["label"]], device=device)
        table = pd.DataFrame({"idx": idx, "label": y.tolist(), "radius": keep["radius"].to_numpy()})
        if not idx:
            table["wrong_at"], table["calls"] = [], []
            table.to_csv(out, sep="\t", index=False)
            return {"images": 0, "seconds": time.perf_counter() - t0}
        net = smooth.base_classifier
        _, adv = adversarial_distances(net, "ddn", x, y, eps=float(cfg.factor * table["radius"].max()) + 1.0,
                                       steps=cfg.attack_steps)
        fixed = _noise_of(base) if base.sigma is not None else None
        sw = samplewise.settings(profile)
        grid = sw.grid("cifar10") if fixed is None else ()

        def answer(queries):
            noises = {}
            if fixed is None:  # the deployed sample-wise classifier picks each point's level first
                gens = [[stream("selector", seed, idx[j], device, k=20 + g, sub=step) for g in range(len(grid))]
                        for j, step, _ in queries]
                picks = choose_sigmas(net, [p for _, _, p in queries], grid, sw.k_test, gens)
                noises = {q: Gaussian(pk.sigma) for q, pk in enumerate(picks)}
            items = [Item(q, p, stream("audit", seed, idx[j], device, 10, sub=step), noises.get(q, fixed))
                     for q, (j, step, p) in enumerate(queries)]
            return [c for _, c in smooth.predict_many(items, cfg.n, cfg.alpha, None)]

        wrong, calls = first_wrong_on_grid(answer, x, adv - x, cfg.factor * table["radius"].to_numpy(), y.tolist(), cfg.steps)
        table["wrong_at"], table["calls"] = wrong, calls
        table.to_csv(out, sep="\t", index=False)
        return {"images": len(table), "seconds": time.perf_counter() - t0}

    path, _ = store(profile).load_or_compute(cfg, compute, "tsv", device=device)
    return pd.read_csv(path, sep="\t")


def audit_table(audits: dict[str, pd.DataFrame], factor: float, alpha: float) -> pd.DataFrame:
    """Per row: certified points attacked, violations (a wrong answer closer than the radius), the
    negative control's violations (closer than ``factor`` times it), predict calls and the expected
    number of false alarms (calls x alpha)."""
    from ..methods.audit import audit_counts

    rows = {}
    for name, a in audits.items():
        c = audit_counts(a["radius"].to_numpy(), a["wrong_at"].to_numpy(), factor)
        rows[name] = {"certified points": c["certified"], "violations": c["violations"],
                      "control violations": c["control violations"], "predict calls": int(a["calls"].sum()),
                      "expected false alarms": float(a["calls"].sum() * alpha)}
    return pd.DataFrame.from_dict(rows, orient="index")


# -- rows loaded from the chapters at their own N (too costly here at the paper's N) ----------------


def chapter_table(profile: str, device: torch.device | str = "cpu", progress: bool = True, seed: int = 0,
                  radii: tuple[float, ...] = RADII) -> pd.DataFrame:
    """The methods this profile does not certify at the paper's N, from their chapters' own logs (their
    N, their test images): chapter 1's denoisers (one-step, multi-step, DnCNN; Gaussian l2 and
    Laplace / uniform l1) and chapter 4's dual smoothing (the sound certificate and the paper's
    three-sigma one, the envelope over the budgets D as in its Figure 5)."""
    from ..core.metrics import acr, certified_accuracy
    from . import variational

    sd, out, s = score_denoising.settings(profile), {}, settings(profile)

    def add(name, log, chapter, guarantee, norm, n, images):
        r = {f"r = {x:g}": a for x, a in zip(radii, certified_accuracy(log, radii))}
        r.update({"ACR": acr(log) if "radius" in log else np.nan, "N": n, "images": images, "guarantee": guarantee,
                  "norm": norm, "chapter": chapter})
        out[name] = r

    st = score_denoising.store(profile)
    for sg in sd.sigmas:
        for kind in s.denoisers:
            m = score_denoising.method(kind, profile, sg)
            log = score_denoising.certification(m, "gaussian", sg, profile, st, device, progress, seed=seed)
            add(f"Denoised ({kind.replace('_', '-')}), sigma = {sg:g}", log, "01_denoised_smoothing", "fixed noise", "l2",
                sd.n, len(log))
    for nz in ("laplace", "uniform"):
        for kind in [k for k in s.denoisers if k == "multi_step"]:  # Tweedie's one-step denoiser is Gaussian only
            m = score_denoising.method(kind, profile, 0.5)
            log = score_denoising.certification(m, nz, 0.5, profile, st, device, progress, seed=seed)
            add(f"Denoised ({kind.replace('_', '-')}), {nz}, sigma = 0.5", log, "01_denoised_smoothing", "fixed noise", "l1",
                sd.n, len(log))
    vs = variational.settings(profile)
    grid = np.asarray(radii, float)
    for sg in vs.a_sigmas if s.variational else ():
        log = variational.certification(sg, vs.a_lams[0], profile, device, progress, seed)
        for which, guarantee, label in (("sound", "fixed noise", "sound (worst case over the selector's range)"),
                                        ("three", "not a guarantee", "the paper's three-sigma certificate")):
            curve = variational.envelope_curve(log, which, grid, clipped=False)
            row = {f"r = {x:g}": a for x, a in zip(radii, curve)}
            row.update({"ACR": np.nan, "N": vs.n, "images": int(log["idx"].nunique()), "guarantee": guarantee, "norm": "l2",
                        "chapter": "04_variational_smoothing"})
            out[f"Variational g_v*, sigma_a = {sg:g}, {label}"] = row
    return pd.DataFrame.from_dict(out, orient="index")


# -- published context (not ours), training cost, claims --------------------------------------------

#: The strongest published CIFAR-10 l2 results (the SoK leaderboard of Li, Xie & Li, as in the book's
#: implementation notes): certified accuracy at r = 0.25 and r = 1.0; models far larger than ours.
PUBLISHED = pd.DataFrame([
    ("SmoothAdv + pre-training + unlabeled data", 0.81, 0.40, "ResNet / WRN, N = 100,000"),
    ("Diffusion denoised smoothing (Carlini et al. 2023)", 0.793, 0.364, "50M diffusion model + ViT-B/16 at 224 px, N = 100,000"),
    ("MACER", 0.71, 0.38, "ResNet-110, N = 100,000"),
    ("Consistency regularization", 0.688, 0.378, "ResNet-110, N = 100,000"),
    ("SmoothMix", 0.679, np.nan, "ResNet-110, N = 100,000"),
    ("DRT", np.nan, 0.395, "ResNet-110, N = 100,000"),
], columns=["method", "r = 0.25", "r = 1", "model and N"]).set_index("method")
PUBLISHED_SOURCE = "SoK certified-robustness leaderboard (Li, Xie & Li), CIFAR-10, l2; as quoted in the book's notes"


def train_seconds(row: Row, profile: str, seed: int = 0) -> float:
    """The stored wall time of the row's model's own training run (its last stage: a fine-tuning's
    seconds exclude the model it starts from); ``nan`` if the store does not record it."""
    base = row if row.source == "sequential" else _row(row.of, profile)
    if base.chapter == "00_randomized_smoothing":
        mode = "universal" if "universal" in base.name else "fixed"
        sg = cohen2019.settings(profile).universal_sigma if mode == "universal" else base.sigma
        cfg, st = cohen2019.cifar_config(sg, profile, mode, seed=seed), cohen2019.store(profile)
    elif base.chapter == "03_heat_smoothing":
        name = "heat" if base.name.startswith("HeatSmoothing") else "smoothadv"
        cfg = heat_smoothing.model_config(name, profile, seed)
        st = heat_smoothing._store_of(cfg, profile)
    elif base.chapter == "02_samplewise_smoothing":
        cfg, st = samplewise.finetune_config("cifar10", profile, seed), samplewise.store(profile)
    else:
        cfg = score_denoising.white_box_config(_noise_of(base).name, base.sigma, profile, seed)
        st = score_denoising.store(profile)
    try:
        return float(st.metadata(cfg, "pt").get("wall_time_s", np.nan))
    except (FileNotFoundError, KeyError, ValueError):
        return float("nan")


def audit_check(row: pd.Series) -> "Check":
    """An audit's verdict: it holds with no violation while its negative control finds some, fails
    with a violation beyond the expected false alarms, and is undecided when the control finds none
    (an audit that cannot find a violation of the inflated certificate audits nothing)."""
    from ..book.claims import Check

    v, ctl, fa = int(row["violations"]), int(row["control violations"]), float(row["expected false alarms"])
    text = f"{v} violations, control {ctl}, expected false alarms {fa:.2g}"
    if v > 0 and v > fa:
        return Check(False, text)
    return Check(True if ctl > 0 else None, text)


def claims(profile: str, table: pd.DataFrame, ratio: dict[str, float], per_image: np.ndarray, fixed_per_image: float,
           agreement: dict[str, tuple[float, "Check"]], audits: pd.DataFrame, calib: dict[str, int], chosen: str):
    """The page's claims (:mod:`rsbook.book.claims`): the sequential certifier's cost against fixed N
    over the whole leaderboard (the issue's target: 10x fewer forward passes), its agreement with fixed
    N on the reference images, and every sound row's audit. ``per_image``: the forward passes of every
    sequential (row, image); ``fixed_per_image``: fixed N's mean per image over the same rows."""
    from ..book.claims import Check, Claims, mean

    c = Claims(CHAPTER, profile)
    m = mean(per_image)
    lo, hi = fixed_per_image / m.high, fixed_per_image / max(m.low, 1e-12)
    outcome = True if lo >= 10 else (False if hi < 10 else None)
    c.qualitative("Sequential certification at n_max = N needs at least 10x fewer forward passes than fixed N "
                  "over the whole leaderboard", "target of this book (A2: 6.5-9.5x on chapter 0)",
                  f"{ratio['all']:.1f}x ({len(per_image)} certifications)",
                  [Check(outcome, f"ratio {ratio['all']:.2f}, 95 % interval from the mean passes per certification "
                                  f"[{lo:.2f}, {hi:.2f}] against 10")],
                  why="measured on every sequential row of the board (selection samples included)")
    for name, (gap, check) in agreement.items():
        c.qualitative(f"{name}: certified accuracy within 0.02 of fixed N on the reference images", "target of this book",
                      f"largest gap {gap:.3f}", [check], why="the reference images (fixed N from appendix A2's runs)")
    other = [k for k in calib if k != chosen]
    c.qualitative(f"The {chosen} confidence sequence certifies the calibration images with fewer forward passes",
                  "chosen on held-out images", f"{calib[chosen]:,} vs {', '.join(f'{calib[k]:,}' for k in other)}",
                  [all(calib[chosen] <= calib[k] for k in other)],
                  why="the choice made on images that are not the leaderboard's; it decides which sequence the board uses")
    for name, r in audits.iterrows():
        if table.loc[name, "guarantee"] == "not a guarantee":
            continue
        c.qualitative(f"{name}: no certified point is violated by the audit", "a sound certificate has none",
                      f"{int(r['violations'])} of {int(r['certified points'])}", [audit_check(r)],
                      why="DDN direction on the base network; the deployed smoothed classifier asked along it")
    return c


def certification(row: Row, sequence: str, profile: str, device: torch.device | str = "cpu", progress: bool = True,
                  seed: int = 0) -> pd.DataFrame:
    """The page's certification of ``row`` (:func:`row_log`; a derived row from its base row's log)."""
    if row.source == "derived":
        return derived_log(row, row_log(_row(row.of, profile), sequence, profile, device, progress, seed), profile)
    return row_log(row, sequence, profile, device, progress, seed)


def _arch(model: Any) -> str:
    while not hasattr(model, "arch") and hasattr(model, "base"):
        model = model.base
    return str(getattr(model, "arch", type(model).__name__))


def planned_work(profile: str, seed: int = 0, sequence: str = "betting") -> "Plan":
    """The page's own artifacts at ``profile`` (the models are their chapters' work): the calibration
    runs, each sequential row's log (``sequence``: the one the calibration chose where it is stored)
    and each row's audit."""
    from ..book.eta import Plan, Planned

    s = settings(profile)
    calib = calibration_configs(profile, seed)
    images = len(leaderboard_images(profile))
    seq_rows = [r for r in rows(profile) if r.source == "sequential"]
    models = [_model_and_smooth(r, profile, "cpu", False, seed)[0] for r in seq_rows]
    certs = [Planned(row_config(r, sequence, profile, seed, "cpu", False, True), _arch(m), images, s.n_max // 10)
             for r, m in zip(seq_rows, models)]
    certs = [p for p in certs if _reusable(p.config, profile) is None]
    audits = [audit_config(r, sequence, profile, seed, stand_in=True) for r in rows(profile)]
    return Plan(trainings=tuple(models),
                certifications=tuple(certs), other=(*calib, *audits))
