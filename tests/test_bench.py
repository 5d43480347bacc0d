"""``rsbook bench certify``: runs end to end, reports equivalent certificates, writes CSV/JSON."""

import csv
import json

from rsbook.bench import BenchConfig, bench_certify, format_table
from rsbook.cli import main

TINY = dict(model="lenet", dataset="mnist", images=2, n0=10, n=200, repeats=1, forward_seconds=0.05, compile="off")


def test_bench_reports_throughput_and_identical_certificates():
    result = bench_certify(BenchConfig(**TINY), log=lambda m: None)
    rows = {r["variant"]: r for r in result["rows"]}
    ref, eng = rows["reference loop (Cohen et al.)"], rows["Smooth.certify (engine)"]
    assert ref["per_s"] > 0 and eng["per_s"] > 0
    assert eng["speedup"] == eng["per_s"] / ref["per_s"]
    eq = result["equivalence"]
    # same seeds, same blocks of 400 draws: only float differences (channels_last) could change a count
    assert eq["same_prediction"] == 2 and eq["equivalent"]
    assert eq["max_diff_in_mc_sd"] < 1.0
    meta = result["meta"]
    assert meta["config"]["n"] == 200 and meta["torch"] and meta["device"].startswith("cpu")
    table = format_table(result)
    assert "Smooth.certify (engine)" in table and "statistically equivalent" in table


def test_cli_writes_csv_and_json(tmp_path, capsys):
    args = ["bench", "certify", "--model", "lenet", "--dataset", "mnist", "--images", "1", "--n0", "10", "--n", "100",
            "--repeats", "1", "--forward-seconds", "0.05", "--compile", "off", "--batch-size", "64",
            "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reference loop" in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert len(data["rows"]) == 4 and data["rows"][3]["batch"] == 64
    with open(tmp_path / "b.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == [r["variant"] for r in data["rows"]]
    assert rows[0]["config_model"] == "lenet"


def test_cli_refuses_a_missing_weights_file(tmp_path, capsys):
    assert main(["bench", "certify", "--weights", str(tmp_path / "nope.pt"), "--images", "1"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_refuses_corrupt_or_mismatched_weights(tmp_path, capsys):
    import torch

    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["bench", "certify", "--weights", str(tmp_path / "bad.pt"), "--images", "1"]) == 2
    assert "is not a cnn4 state dict" in capsys.readouterr().err
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
    assert main(["bench", "certify", "--weights", str(tmp_path / "other.pt"), "--images", "1"]) == 2
    assert "pass a matching .pt" in capsys.readouterr().err
