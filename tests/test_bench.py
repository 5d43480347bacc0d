"""``rsbook bench certify``: equivalent certificates, mixed noise, contention detection, CSV/JSON output."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import rsbook.bench.certify as certify_module
from rsbook.bench.certify import BenchConfig, bench_certify, format_table
from rsbook.bench.load import LoadMonitor, contention
from rsbook.cli import main

TINY = dict(model="lenet", dataset="mnist", images=3, n0=10, n=200, repeats=1, forward_seconds=0.05, compile="off")


def test_bench_gives_the_reference_loops_certificates_with_mixed_noise():
    result = bench_certify(BenchConfig(**TINY, sigmas=(0.25, 0.5, 1.0)), log=lambda m: None)
    eq = result["equivalence"]
    # same seeds, same blocks of 400 draws at each image's own sigma: only float differences
    # (channels_last) could change a count
    assert eq["same_prediction"] == 3 and eq["equivalent"] and eq["max_diff_in_mc_sd"] < 1.0
    meta = result["meta"]
    assert meta["config"]["sigmas"] == (0.25, 0.5, 1.0) and meta["device"].startswith("cpu")
    assert set(meta["contention"]) >= {"others", "steal", "loadavg", "spread", "contended"}
    table = format_table(result)
    assert "sigma per image in [0.25, 0.5, 1.0]" in table and "machine load during the run" in table


def test_equivalence_check_catches_different_certificates(monkeypatch):
    real = certify_module.reference_certify

    def off_by_many(*args, **kw):  # a "reference" whose counts moved 30 samples to another class
        c0, c = real(*args, **kw)
        top, other = int(np.argmax(c)), (int(np.argmax(c)) + 1) % len(c)
        c = c.copy()
        c[top], c[other] = c[top] - 30, c[other] + 30
        return c0, c

    monkeypatch.setattr(certify_module, "reference_certify", off_by_many)
    result = bench_certify(BenchConfig(**TINY), log=lambda m: None)
    assert not result["equivalence"]["equivalent"] and result["equivalence"]["identical_counts"] == 0
    assert "NOT EQUIVALENT" in format_table(result)


def test_contention_rule():
    calm = {"others": 0.05, "steal": 0.0, "loadavg": 0.5, "cores": 2.0}
    assert not contention(calm, {"eng": [100.0, 110.0]})["contended"]
    busy = contention({**calm, "others": 0.4}, {"eng": [100.0, 110.0]})
    assert busy["contended"] and "other processes used 40%" in busy["reasons"][0]
    assert contention({**calm, "steal": 0.2}, {})["contended"]
    assert not contention({**calm, "loadavg": 3.0}, {})["contended"]  # our own threads raise the load average
    assert contention({**calm, "others": float("nan"), "loadavg": 3.0}, {})["contended"]  # the fallback off Linux
    assert "rounds disagree up to 1.70x" in contention(calm, {"eng": [100.0, 170.0]})["reasons"][0]


def test_load_monitor_sees_another_busy_process():
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    with LoadMonitor() as mon:
        proc.wait()
    # one spinning process on this machine's cores: at least a quarter of 2 cores (half, ideally)
    assert mon.result["others"] >= 0.8 / mon.result["cores"] - 0.15, mon.result


def test_cli_writes_csv_and_json_and_refuses_to_overwrite_with_a_contended_run(tmp_path, capsys, monkeypatch):
    args = ["bench", "certify", "--model", "lenet", "--dataset", "mnist", "--images", "1", "--n0", "10", "--n", "100",
            "--repeats", "1", "--forward-seconds", "0.05", "--compile", "off", "--batch-size", "64", "--sigmas", "0.25,0.5",
            "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv")]
    monkeypatch.setattr(certify_module, "contention", lambda load, runs: {**load, "spread": 1.0, "contended": False, "reasons": []})
    assert main(args) == 0
    assert "reference loop" in capsys.readouterr().out
    data = json.loads((tmp_path / "b.json").read_text())
    assert len(data["rows"]) == 4 and data["rows"][3]["batch"] == 64 and data["meta"]["config"]["sigmas"] == [0.25, 0.5]
    with open(tmp_path / "b.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == [r["variant"] for r in data["rows"]] and rows[0]["config_model"] == "lenet"
    # a busy machine: the table says so, and stored results are not replaced without --force
    monkeypatch.setattr(certify_module, "contention", lambda load, runs: {**load, "spread": 2.0, "contended": True, "reasons": ["test"]})
    before = (tmp_path / "b.json").read_text()
    assert main(args) == 3
    captured = capsys.readouterr()
    assert "CONTENDED RUN" in captured.out and "not overwriting" in captured.err
    assert (tmp_path / "b.json").read_text() == before
    assert main(args + ["--force"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["meta"]["contention"]["contended"]


def test_cli_refuses_a_missing_weights_file(tmp_path, capsys):
    assert main(["bench", "certify", "--weights", str(tmp_path / "nope.pt"), "--images", "1"]) == 2
    err = capsys.readouterr().err
    assert "cnn4 (cifar10) weights not found at" in err and "nope.pt" in err and "pass --weights a cnn4 state dict" in err


def test_cli_refuses_corrupt_or_mismatched_weights(tmp_path, capsys):
    import torch

    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["bench", "certify", "--weights", str(tmp_path / "bad.pt"), "--images", "1"]) == 2
    err = capsys.readouterr().err
    assert "cnn4 (cifar10) weights at" in err and "bad.pt are not a readable PyTorch state dict" in err and "pass --weights" in err
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
    assert main(["bench", "certify", "--weights", str(tmp_path / "other.pt"), "--images", "1"]) == 2
    err = capsys.readouterr().err
    assert "other.pt do not fit the network" in err and "pass --weights a cnn4 state dict for cifar10" in err


def test_bench_sequential_compares_fixed_and_sequential_on_the_same_images(capsys):
    # Same images, one engine: the fixed run costs exactly n0 + N per image, the sequential run at
    # most that; a radius above both caps (5.0 = 20 sigma) is certified by neither.
    from rsbook.bench.sequential import bench_sequential, format_sequential

    cfg = BenchConfig(**{**TINY, "n": 2000, "images": 3})
    result = bench_sequential(cfg, radii=(0.0, 0.5, 5.0), log=lambda m: None)
    fixed, seq = result["rows"]
    assert fixed["forward_passes_per_image"] == cfg.n0 + cfg.n
    assert seq["forward_passes_per_image"] <= cfg.n0 + cfg.n
    for r, v in result["certified_accuracy"].items():
        assert 0 <= v["same_decision"] <= 1
    assert result["certified_accuracy"]["5"]["sequential"] == 0.0  # above both caps (3.2 sigma at N = 2,000)
    assert result["meta"]["forward_pass_ratio"] == (cfg.n0 + cfg.n) / seq["forward_passes_per_image"]
    assert "fewer" in format_sequential(result)


def test_scaleout_projection_is_the_slowest_ranks_share():
    from rsbook.bench.scaleout import project
    from rsbook.papers import appendix_speed, heat_smoothing

    # 500 images on 8 ranks: the slowest holds ceil(500 / 8) = 63 images of 10,100 samples at 1,000 samples/s
    assert project(500, 10_100, 1000.0, 8) == 63 * 10.1
    assert project(3, 100, 10.0, 8) == 10.0  # more ranks than images: one image each
    # chapter 3's paper plan by hand: 7 logs of 500 images, N = 10,000 (+ n0 = 100 for the 2 stochastic models)
    certs = heat_smoothing.planned_work("paper").certifications
    assert sorted(p.config.n0 + p.config.n if p.samples is None else p.samples for p in certs) == [10_000] * 5 + [10_100] * 2
    table = appendix_speed.projected_paper_hours({"cifar_resnet34": (2000.0, "gpu")}, gpus=(1, 4)).set_index("chapter")
    row = table.loc["3 (HeatSmoothing)"]
    assert row["1 GPU"] == pytest.approx((5 * 500 * 10_000 + 2 * 500 * 10_100) / 2000 / 3600)
    assert row["4 GPUs"] == pytest.approx((5 * 125 * 10_000 + 2 * 125 * 10_100) / 2000 / 3600)
    assert row["not measured"] == "-" and table.loc["0 (Cohen et al.)", "logs"] == "0 of 31"


def _fake_certify_result(ref, eng, fw, contended=False, features=None):
    """A stored ``bench certify`` result with the given (best, slowest, fastest) rounds, in samples/s."""
    def row(variant, per_s, lo, hi, **kw):
        return dict(variant=variant, precision="fp32, NCHW, eager", batch=64, per_s=per_s, unit="samples/s", per_s_min=lo, per_s_max=hi,
                    ratio_to_forward=kw.get("ratio"), speedup=kw.get("speedup"))

    rows = [row("raw forward, reference model", 1000.0, 900.0, 1000.0), row("raw forward, engine model", *fw),
            row("reference loop (Cohen et al.)", *ref, speedup=1.0),
            row("Smooth.certify (engine)", *eng, ratio=eng[0] / fw[0], speedup=eng[0] / ref[0])]
    meta = {"config": {"model": "cnn4", "weights": "random", "sigmas": [], "sigma": 0.25, "n0": 100, "n": 1000, "precision": "fp32"},
            "setup_seconds": 1.0, "rsbook": "0.2.0", "git_commit": "0" * 40, "device": "cpu: Test CPU (2 threads)", "date": "2026-01-01",
            "contention": {"others": 0.6 if contended else 0.0, "contended": contended, "reasons": ["busy"] if contended else []}}
    if features is not None:
        meta["cpu_features"] = features
    eq = {"same_prediction": 3, "identical_counts": 3, "images": 3, "equivalent": True}
    return {"meta": meta, "rows": rows, "equivalence": eq}


def test_a1_targets_are_decided_by_the_worst_case_over_the_rounds():
    from rsbook.papers import appendix_speed as a1

    # reference loop best 100 (rounds 80-100), engine best 250 (rounds 190-250), engine forward best 260 (rounds 200-260)
    met = _fake_certify_result((100.0, 80.0, 100.0), (250.0, 210.0, 250.0), (260.0, 200.0, 260.0))
    near = _fake_certify_result((100.0, 80.0, 100.0), (199.6, 180.0, 199.6), (210.0, 200.0, 210.0))  # 1.996x: within rounding of 2
    straddle = _fake_certify_result((100.0, 80.0, 100.0), (240.0, 190.0, 240.0), (250.0, 240.0, 250.0))
    busy = _fake_certify_result((100.0, 80.0, 100.0), (250.0, 210.0, 250.0), (260.0, 200.0, 260.0), contended=True)
    table = a1.summary_table([met, near, straddle, busy])
    # by hand: speedup = best / best, worst case = slowest engine round / fastest reference round
    assert table.loc[1, "speedup"] == pytest.approx(2.5) and table.loc[1, "speedup, worst case"] == pytest.approx(2.1)
    assert table.loc[1, "certify / forward"] == pytest.approx(250 / 260)
    assert table.loc[1, "certify / forward, worst case"] == pytest.approx(210 / 260)
    words, checks = a1.targets_table(table)
    assert [checks[i][1].outcome for i in (1, 2, 3, 4)] == [True, False, None, None]  # met, missed, undecided, contended
    assert words.loc[2, "speedup"] == "1.996x (worst case 1.800x): missed"
    assert "busy machine" in checks[4][1].test
    assert checks[1][0].outcome is None  # 0.96 best, 0.81 worst case: straddles 0.9
    assert a1.target_check(0.95, None, 0.9, "x").outcome is True  # only the best round stored: it decides


def test_a1_names_the_machine_of_each_run():
    from rsbook.papers import appendix_speed as a1

    feats = {"torch_capability": "AVX2", "avx2": True}
    old = _fake_certify_result((100.0, 80.0, 100.0), (250.0, 210.0, 250.0), (260.0, 200.0, 260.0))
    same = _fake_certify_result((100.0, 80.0, 100.0), (250.0, 210.0, 250.0), (260.0, 200.0, 260.0), features=feats)
    other = _fake_certify_result((100.0, 80.0, 100.0), (250.0, 210.0, 250.0), (260.0, 200.0, 260.0),
                                 features={"torch_capability": "AVX512", "avx2": True})
    here = "cpu: Test CPU (2 threads)"
    assert [a1.same_machine(r, here, feats) for r in (old, same, other)] == [None, True, False]
    assert a1.same_machine(same, "cpu: Test CPU (1 threads)", feats) is False
    assert a1.measured_on(same) == here and a1.machine_load(old).startswith("idle")
    # a run stored with the old "(1 threads)" is the same kind of machine as today's "(1 thread)"
    one = {**same, "meta": {**same["meta"], "device": "cpu: Test CPU (1 threads)"}}
    assert a1.same_machine(one, "cpu: Test CPU (1 thread)", feats) is True


def test_the_device_name_counts_torch_threads_in_words(monkeypatch):
    import torch

    from rsbook.infra import provenance

    monkeypatch.setattr(provenance, "_cpu_model", lambda: "Test CPU")
    for threads, words in ((1, "(1 thread)"), (2, "(2 threads)")):
        monkeypatch.setattr(torch, "get_num_threads", lambda t=threads: t)
        assert provenance.device_name("cpu") == f"cpu: Test CPU {words}"


def test_a1_page_text_and_claims_from_known_runs():
    from rsbook.book.claims import Check
    from rsbook.papers import appendix_speed as a1

    feats = {"torch_capability": "AVX2", "avx512f": True}
    met = _fake_certify_result((100.0, 80.0, 100.0), (250.0, 210.0, 250.0), (260.0, 200.0, 260.0), features=feats)
    near = _fake_certify_result((100.0, 80.0, 100.0), (199.6, 180.0, 199.6), (210.0, 200.0, 210.0))  # 1.996x: missed
    straddle = _fake_certify_result((100.0, 80.0, 100.0), (240.0, 190.0, 240.0), (250.0, 240.0, 250.0))  # 2.4x, worst 1.9x
    results = [met, near, straddle]
    for r in results:
        r["meta"]["torch"] = "2.13.0"
    table = a1.summary_table(results)
    assert a1.cpu_features_text(results) == ("the runs that record it were measured on a CPU with AVX-512 and without AVX-512 BF16, "
                                             "AMX BF16, AVX-512 FP16 (PyTorch dispatches to AVX2).")
    assert a1.machines_note(results, table, "cpu: Test CPU (2 threads)", feats) == (
        "Measured on cpu: Test CPU (2 threads) with torch 2.13.0, 2026-01-01. This page was built on cpu: Test CPU (2 threads) "
        "(AVX2); run 1 was measured on a machine of that kind (same device name, threads and CPU features; the host itself is "
        "not recorded); runs 2, 3 did not record their CPU features, so whether they were measured on a machine of that kind "
        "cannot be told.")
    _, checks = a1.targets_table(table)
    note = a1.speedup_note(table, a1.speedup_factors(table), checks)
    assert note.startswith("Run 2 miss the 2x CPU target.")
    assert ("* run 2 (cnn4 (random init)): the reference loop loses only 10.000x against its model's best raw speed, and the "
            "engine's evaluation (channels_last, compilation) is 0.210x faster") in note  # 1000 / 100 and 210 / 1000 img/s
    assert note.endswith("Run 3 clear the target with their best rounds (2.400x) but not in the worst case over their rounds "
                         "(1.900x): the machine's speed varied too much during them to call the target met.")
    assert a1.speedup_note(table.loc[[1]], a1.speedup_factors(table.loc[[1]]), checks) == ""  # run 1 meets it
    den = [{"one-step: certify / forward": 0.95, "multi-step: certify / forward": 0.92, "multi-step: engine / one-sample loop": 3.0,
            "ceiling: forward at batch B / batch 1": 2.5, "measured on": "cpu: Test CPU (2 threads)", "machine load": "idle",
            "checks": [Check(True, "a"), Check(True, "b"), Check(False, "c")]}]
    claims = a1.claims("cpu", results, table, den, [True, False], {})
    verdicts = {r.claim.split(" (")[0]: r.verdict for r in claims.rows}
    assert verdicts == {
        "denoised certification": "reproduced", "the batched multi-step denoiser at >= 10x a one-sample-at-a-time loop": "not reproduced",
        "Smooth.certify runs at >= 0.9 of the model's raw forward throughput": "inconclusive",  # 0.96 / 0.95 best, 0.81 / 0.86 worst
        ">= 2x the published loop on a CPU": "partly",  # met, missed, undecided
        "certificates equal the published loop's": "reproduced",
        "a K-process torchrun run gives the one-process log": "partly"}
    assert claims.rows[3].ours == "2.500x, 1.996x, 2.400x" and "batching gains at most 2.500x" in claims.rows[1].reason


def test_bench_dual_counts_the_passes_of_selector_and_classifier(tmp_path, capsys):
    # every level of every image costs n0 + n classifier passes; the selector n_h per image
    from rsbook.cli import main

    out = tmp_path / "dual.json"
    assert main(["bench", "dual", "--images", "2", "--n-h", "30", "--n0", "5", "--n", "20", "--repeats", "1",
                 "--forward-seconds", "0.05", "--batch-size", "64", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    passes = res["meta"]["passes"]
    assert passes["selector"] == 2 * 30
    levels = passes["classifier"] / 25
    assert levels == int(levels) and 2 <= levels <= 2 * (1 + 2 * 2 * 2)  # a median per image, at most 8 ends more
    (row,) = [r for r in res["rows"] if r["variant"] == "dual certification"]
    assert 0 < row["ratio_to_forward"] <= 1.5
    assert "dual certification" in capsys.readouterr().out


# -- A1's paper run plan: GPU hours from measured rates ------------------------------------------------


def test_project_plan_hours_match_the_hand_computed_arithmetic():
    from dataclasses import dataclass

    from rsbook.book.eta import Plan, Planned
    from rsbook.papers.appendix_speed import Rate, TrainingCost, project_plan

    @dataclass(frozen=True)
    class Cert:  # a certification config: only n0, n and sequential are read
        n0: int
        n: int
        sequential: bool = False

    @dataclass(frozen=True)
    class TrainConfig:  # a training config: type name, arch, dataset, subset and epochs are read
        arch: str
        dataset: str
        epochs: int
        train_subset: int = 0

    gpu = {"big": Rate(1000.0, "measured")}
    cpu = {("big", 2): 100.0, ("small", 2): 400.0}  # small is 4x faster than big on the CPU: big's GPU rate bounds it
    costs = {("TrainConfig", ""): [TrainingCost(6.0, "cpu", "cnn"), TrainingCost(4.0, "cpu", "cnn")]}  # mean 5 passes
    plan = Plan(trainings=[TrainConfig("big", "cifar10", 2, 1000), TrainConfig("small", "mnist", 3)],
                certifications=[Planned(Cert(100, 900), "big", 10),                      # 10 * 1,000 passes
                                Planned(Cert(100, 1900, True), "small", 4, samples=50),  # sequential: 0.25 * 2,000 each
                                Planned(Cert(100, 901), "unmeasured", 7),
                                Planned(Cert(100, 900), "big", 10)])  # planned twice, stored (and counted) once
    h = project_plan(plan, gpu, cpu, costs, {"cifar10": 50_000, "mnist": 60_000}, sequential=(0.25, "measured"))
    assert h.certification_s == pytest.approx(10 * 1000 / 1000 + 4 * 500 / 1000)  # 10 s + 2 s
    assert h.training_s == pytest.approx(5 * 1000 * 2 / 1000 + 5 * 60_000 * 3 / 1000)  # 10 s + 900 s
    assert h.certifications == (2, 3) and h.trainings == (2, 2)
    assert h.not_measured == ("certifying unmeasured",)
    assert any("upper bound" in s and "4x" in s for s in h.rate_from)
    # a config an earlier chapter planned is neither counted nor planned
    from rsbook.infra.artifacts import config_key

    again = project_plan(plan, gpu, cpu, costs, {"cifar10": 50_000, "mnist": 60_000},
                         skip=frozenset({config_key(plan.trainings[1])}))
    assert again.trainings == (1, 1) and again.training_s == pytest.approx(10.0)
    # without a measured sequential share the planned guess of samples per image counts
    assert project_plan(plan, gpu, cpu, costs, {"cifar10": 50_000, "mnist": 60_000}).certification_s == pytest.approx(10 + 0.2)


def test_training_costs_are_seconds_per_image_epoch_times_the_cpu_rate():
    from rsbook.papers.appendix_speed import training_costs

    meta = {"config": {"type": "TrainConfig", "arch": "cnn4", "dataset": "cifar10", "train_subset": 1000},
            "history": [{"seconds": 2.0}, {"seconds": 4.0}], "device": "cpu: AMD EPYC (2 threads)"}
    costs = training_costs([meta, {**meta, "device": "cpu: X (1 threads)"}], {("cnn4", 2): 500.0}, {"cifar10": 50_000})
    (cost,) = costs[("TrainConfig", "")]  # the 1-thread run has no CPU rate at 1 thread: skipped
    assert cost.passes == pytest.approx(3.0 / 1000 * 500.0) and cost.arch == "cnn4"


def test_paper_run_plan_has_a_row_for_every_chapter():
    from pathlib import Path

    from rsbook.papers import appendix_speed

    notebooks = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.md"))
    assert sorted(ch for ch, _ in appendix_speed.PAPER_MODULES) == notebooks
    so = appendix_speed.scaleout_results()
    table = appendix_speed.paper_run_plan(appendix_speed.paper_gpu_rates(so), list(so.values()))
    assert list(table["chapter"]) == [ch for ch, _ in appendix_speed.PAPER_MODULES]
    assert list(table.columns) == ["chapter", "command", "certification (GPU h)", "training (GPU h)", "total (GPU h)",
                                   "counted", "rate from", "notes"]
    assert all(c == f"rsbook run {ch} -p profile paper -p device cuda" for ch, c in zip(table["chapter"], table["command"]))
    measured = table[table["chapter"].isin(["00_randomized_smoothing", "02_samplewise_smoothing", "04_variational_smoothing",
                                            "05_leaderboard"])]
    assert (measured["certification (GPU h)"] > 0).all() and measured["rate from"].str.contains("H200").all()
