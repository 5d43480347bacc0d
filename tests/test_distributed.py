"""Scale-out under torchrun: K processes give the one-process log; a killed rank resumes; the merge refuses bad shards.

The torchrun runs launch ``tests/torchrun_certify.py`` on CPU (gloo), as a user would on GPUs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import torchrun_certify as tc
from rsbook.infra.artifacts import ArtifactStore, config_key
from rsbook.cli import main as cli
from rsbook.runs import runner
from rsbook.runs.runner import certify_dataset, merge_certification, read_log
from rsbook.runs.shards import ShardError
from rsbook.infra.distributed import World, fresh_launch_env, shard_positions, world

SCRIPT = Path(tc.__file__)
KEEP = ["idx", "label", "predict", "radius", "correct", "noise", "sigma"]  # every column but the wall time


def _torchrun(store: Path, *extra: str, procs: int = 3) -> subprocess.CompletedProcess:
    env = fresh_launch_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", str(SCRIPT), str(store), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _artifact(store: Path, sequential: bool = False) -> tuple[pd.DataFrame, dict]:
    key = config_key(tc.config(sequential))
    return read_log(store / f"{key}.tsv"), json.loads((store / f"{key}.json").read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> pd.DataFrame:
    store = tmp_path_factory.mktemp("one")
    tc.run(ArtifactStore(store))
    return _artifact(store)[0]


def test_shards_cover_every_position_once():
    for size in (1, 2, 3, 7):
        got = sorted(p for r in range(size) for p in shard_positions(10, World(r, size)))
        assert got == list(range(10))


def test_a_hand_set_rank_without_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        world()


def test_three_processes_give_the_one_process_log(tmp_path, one_process):
    done = _torchrun(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    log, meta = _artifact(tmp_path)
    assert len(one_process) == tc.IMAGES and list(log["idx"]) == sorted(log["idx"])
    pd.testing.assert_frame_equal(log[KEEP], one_process[KEEP])
    assert [s["rank"] for s in meta["shards"]] == [0, 1, 2] and {s["world"] for s in meta["shards"]} == {3}
    assert [s["rows"] for s in meta["shards"]] == [5, 4, 4]  # 13 images, round-robin
    assert not (tmp_path / ".work" / meta["key"]).exists()  # the shards are gone once stored
    # a stored result that is not sharded is computed once, by rank 0 alone, nested stores included
    assert (tmp_path / "computed.txt").read_text().splitlines() == ["outer on rank 0: rank 0 of 1", "nested on rank 0: rank 0 of 1"]
    # a per-image table (the attack runner's way) is the one a single process computes, bit for bit
    single = tc.table(tmp_path / "single")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "table.result.tsv", sep="\t"), single)
    assert single["draw"].nunique() == tc.IMAGES


@pytest.mark.slow
def test_the_sequential_certifier_under_three_processes(tmp_path):
    one = tmp_path / "one"
    tc.run(ArtifactStore(one), sequential=True)
    done = _torchrun(tmp_path / "three", "--sequential")
    assert done.returncode == 0, done.stderr[-3000:]
    (log, _), (ref, _) = _artifact(tmp_path / "three", True), _artifact(one, True)
    keep = [*KEEP, "samples", "lower", "cert_0", "cert_0.05", "cert_0.2"]
    assert ref["samples"].nunique() > 1  # the images stop at different times
    pd.testing.assert_frame_equal(log[keep], ref[keep])


@pytest.mark.slow
def test_a_killed_rank_is_resumed_by_rerunning_the_command(tmp_path, one_process):
    killed = _torchrun(tmp_path, "--kill", "1", "2")  # rank 1 dies once its shard holds 2 rows
    assert killed.returncode != 0
    shard = tmp_path / ".work" / config_key(tc.config()) / "log.partial.rank1-of-3.tsv"
    assert len(read_log(shard)) == 2 and not (tmp_path / f"{config_key(tc.config())}.tsv").exists()
    again = _torchrun(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    log, meta = _artifact(tmp_path)
    pd.testing.assert_frame_equal(log[KEEP], one_process[KEEP])
    rank1 = meta["shards"][1]["sessions"]
    assert len(rank1) == 2 and "finished_utc" not in rank1[0] and rank1[1]["computed"] == 4 - 2  # only its missing images


class _ShardDone(Exception):
    pass


def _shards(folder: Path, monkeypatch, size: int = 3, run_config=None) -> Path:
    """Write the ``size`` shards of the toy run into ``folder`` in this process, as each rank would, stopping before the merge."""
    log_path = folder / "log.partial.tsv"
    for r in range(size):
        monkeypatch.setattr(runner, "world", lambda r=r: World(r, size))
        monkeypatch.setattr(runner, "barrier", lambda w=None: (_ for _ in ()).throw(_ShardDone()))
        with pytest.raises(_ShardDone):
            certify_dataset(*_toy_args(log_path), run_config=run_config)
    monkeypatch.undo()
    return log_path


def _toy_args(log_path: Path):
    from rsbook.core.certify import Smooth
    from conftest import ThresholdClassifier

    c = tc.config()
    return (Smooth(ThresholdClassifier(0.5), 2, ("gaussian", 0.3)), tc.dataset(), c.n0, c.n, c.alpha, 50, log_path, c.seed, False)


def test_rsbook_merge_stores_the_one_process_artifact(tmp_path, monkeypatch, one_process):
    cfg = tc.config()
    store = ArtifactStore(tmp_path)
    from rsbook.infra.artifacts import config_dict

    _shards(store.work_dir(cfg), monkeypatch, run_config={"key": config_key(cfg), "config": config_dict(cfg)})
    assert cli(["merge", str(store.work_dir(cfg))]) == 0
    log, meta = _artifact(tmp_path)
    pd.testing.assert_frame_equal(log[KEEP], one_process[KEEP])
    assert len(meta["shards"]) == 3 and meta["config"] == json.loads(json.dumps(config_dict(cfg)))


@pytest.fixture
def shards(tmp_path, monkeypatch) -> Path:
    return _shards(tmp_path / "work", monkeypatch)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_the_merge_is_the_one_process_log(shards, one_process):
    log_path, _ = merge_certification(shards)
    pd.testing.assert_frame_equal(read_log(log_path)[KEEP], one_process[KEEP])


def test_the_merge_refuses_a_duplicate_row(shards):
    r0, r1 = (shards.with_name(f"log.partial.rank{r}-of-3.tsv") for r in (0, 1))
    with open(r1, "a") as f:
        f.write(_lines(r0)[1])
    with pytest.raises(ShardError, match=r"rank1-of-3\.tsv has a row for image 100, which is also in log\.partial\.rank0-of-3\.tsv"):
        merge_certification(shards)


def test_the_merge_refuses_a_missing_image(shards):
    r2 = shards.with_name("log.partial.rank2-of-3.tsv")
    lines = _lines(r2)
    r2.write_text("".join(lines[:-1]))
    gone = int(lines[-1].split("\t")[0])
    with pytest.raises(ShardError, match=rf"rank2-of-3\.tsv lacks images \[{gone}\]"):
        merge_certification(shards)


def test_the_merge_refuses_a_shard_of_another_config(shards, tmp_path, monkeypatch):
    other = tmp_path / "other"
    monkeypatch.setattr(tc, "config", lambda: tc.CertifyConfig(tc.Toy(), tc.Gaussian(0.3), n0=20, n=400, alpha=0.01, seed=3))
    _shards(other, monkeypatch)
    for suffix in (".tsv", ".json"):
        shutil.copy(other / f"log.partial.rank1-of-3{suffix}", shards.with_name(f"log.partial.rank1-of-3{suffix}"))
    with pytest.raises(ShardError, match=r"shard log\.partial\.rank1-of-3\.tsv belongs to another run \(it differs in n\)"):
        merge_certification(shards)


def test_a_one_process_run_does_not_overrun_shards_of_a_torchrun_run(shards):
    with pytest.raises(ShardError, match="rank0-of-3.tsv"):
        certify_dataset(*_toy_args(shards))


@pytest.mark.slow
def test_a_chapter_runs_under_torchrun(tmp_path):
    """Chapter 3 at smoke (its models, sharded certification, attack logs and audits) with 2 ranks: rank 0 trains
    and fine-tunes alone, every rank certifies and attacks its shard (2 of the 4 test images), both executed
    notebooks come out. (Its dry run, with the paper's architectures and the ImageNet path, runs in one process
    in test_book.py.)"""
    env = fresh_launch_env()
    env["RSBOOK_DATA"] = str(tmp_path / "no-data")  # the smoke profile needs no dataset
    out = tmp_path / "ch3.ipynb"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "rsbook", "run",
           "03_heat_smoothing", "-p", "profile", "smoke", "-p", "every", "2500", "-o", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=Path(tc.__file__).parents[1])
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.count("03_heat_smoothing: ok") == 2
    assert out.exists() and out.with_name("ch3.rank1.ipynb").exists()


def test_shards_of_a_run_with_a_noise_per_image_merge_into_the_one_process_log(tmp_path, monkeypatch):
    from rsbook.core.certify import Smooth
    from rsbook.core.noise import Gaussian
    from rsbook.runs.runner import NoiseTable
    from conftest import ThresholdClassifier

    ds = tc.dataset()
    table = NoiseTable.of({int(i): Gaussian(0.2 + 0.1 * (k % 3)) for k, i in enumerate(ds.indices)})
    args = lambda path: (Smooth(ThresholdClassifier(0.5), 2), ds, 20, 300, 0.01, 50, path, 3, False)  # noqa: E731
    one = certify_dataset(*args(tmp_path / "one.tsv"), noise=table)
    log_path = tmp_path / "work" / "log.partial.tsv"
    for r in range(3):
        monkeypatch.setattr(runner, "world", lambda r=r: World(r, 3))
        monkeypatch.setattr(runner, "barrier", lambda w=None: (_ for _ in ()).throw(_ShardDone()))
        with pytest.raises(_ShardDone):
            certify_dataset(*args(log_path), noise=table)
    monkeypatch.undo()
    merged, _ = merge_certification(log_path)
    pd.testing.assert_frame_equal(read_log(merged)[KEEP], one[KEEP])
    assert sorted(set(one["sigma"])) == pytest.approx([0.2, 0.3, 0.4])
