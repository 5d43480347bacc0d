import json
from dataclasses import dataclass

import pytest
import torch

from rsbook.infra.artifacts import ArtifactStore, CorruptArtifactError, config_key


@dataclass(frozen=True)
class Cfg:
    a: int = 1
    b: float = 0.5


def _writer(calls):
    def compute(out, work):
        calls.append(work)
        torch.save({"w": torch.arange(4.0)}, out)
        return {"note": "hi"}

    return compute


def test_load_or_compute_computes_once_and_records_provenance(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    path, meta = store.load_or_compute(Cfg(), _writer(calls), "pt")
    path2, meta2 = store.load_or_compute(Cfg(), _writer(calls), "pt")
    assert len(calls) == 1 and path == path2
    assert meta["config"] == {"type": "Cfg", "a": 1, "b": 0.5} and meta["note"] == "hi"
    for field in ("sha256", "wall_time_s", "created_utc"):
        assert field in meta
    for field in ("rsbook", "git_commit", "device", "torch"):
        assert field in meta["provenance"]
    assert torch.equal(store.load_tensors(Cfg())["w"], torch.arange(4.0))
    assert not store.work_dir(Cfg()).exists()  # resumable state is removed once the artifact is complete


def test_keys_follow_the_config():
    assert config_key(Cfg()) == config_key(Cfg(1, 0.5))
    assert config_key(Cfg()) != config_key(Cfg(b=0.25))
    assert config_key(Cfg()).startswith("cfg-")
    with pytest.raises(TypeError):
        config_key({"a": 1})


def test_corrupt_payload_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    path, _ = store.load_or_compute(Cfg(), _writer([]), "pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="sha256"):
        store.load_tensors(Cfg())
    with pytest.raises(CorruptArtifactError, match="recompute"):
        store.load_or_compute(Cfg(), _writer([]), "pt")


def test_broken_metadata_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    store.load_or_compute(Cfg(), _writer([]), "pt")
    store.paths(Cfg(), "pt")[1].write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="metadata"):
        store.metadata(Cfg(), "pt")


def test_failed_compute_leaves_no_artifact_but_keeps_work(tmp_path):
    store = ArtifactStore(tmp_path)

    def boom(out, work):
        (work / "progress.txt").write_text("half done")
        out.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.load_or_compute(Cfg(), boom, "pt")
    assert not store.exists(Cfg(), "pt")
    assert (store.work_dir(Cfg()) / "progress.txt").read_text() == "half done"
    seen = []

    def resume(out, work):
        seen.append((work / "progress.txt").read_text())
        out.write_bytes(b"done")

    store.load_or_compute(Cfg(), resume, "pt")
    assert seen == ["half done"]


def test_recompute_switch(tmp_path):
    calls = []
    ArtifactStore(tmp_path).load_or_compute(Cfg(), _writer(calls), "pt")
    ArtifactStore(tmp_path, recompute=True).load_or_compute(Cfg(), _writer(calls), "pt")
    assert len(calls) == 2
    meta = json.loads(ArtifactStore(tmp_path).paths(Cfg(), "pt")[1].read_text())
    assert meta["key"] == config_key(Cfg())


def test_state_dict_is_loaded_weights_only(tmp_path):
    store = ArtifactStore(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    def compute(out, work):
        torch.save({"x": Evil()}, out)

    store.load_or_compute(Cfg(a=9), compute, "pt")
    with pytest.raises(CorruptArtifactError):
        store.load_tensors(Cfg(a=9))


def test_a_json_payload_cannot_overwrite_the_metadata(tmp_path):
    from rsbook.infra.artifacts import ArtifactStore

    with pytest.raises(ValueError, match="metadata"):
        ArtifactStore(tmp_path).paths(Cfg(), "json")


def test_a_damaged_committed_artifact_is_restored_from_git_not_recomputed(tmp_path):
    from pathlib import Path

    committed = sorted((Path(__file__).resolve().parents[1] / "book" / "artifacts").glob("*/trainconfig-*.pt"))[0]
    hint = ArtifactStore.fix_hint(committed)
    assert hint.startswith("It is a committed artifact: restore it with `git checkout -- ") and committed.stem in hint
    assert "Delete" in ArtifactStore.fix_hint(tmp_path / "cfg-0123456789ab.pt")  # not in git: recompute


_RACER = """
import sys, time, torch
from dataclasses import dataclass
from pathlib import Path
from rsbook.infra.artifacts import ArtifactStore

@dataclass(frozen=True)
class Cfg:
    a: int = 1
    b: float = 0.5

root, log = Path(sys.argv[1]), Path(sys.argv[2])
(root / f"ready-{sys.argv[3]}").touch()
while len(list(root.glob("ready-*"))) < 2:  # both processes check the store at the same moment
    time.sleep(0.01)

def compute(out, work):
    with open(log, "a") as fh:
        fh.write(sys.argv[3] + "\\n")
    time.sleep(1.5)  # long enough for the other process to find no artifact and try too
    torch.save({"who": sys.argv[3]}, out)

path, meta = ArtifactStore(root / "store").load_or_compute(Cfg(), compute, "pt")
print(torch.load(path)["who"], meta["sha256"])
"""


def test_two_processes_sharing_a_store_compute_an_artifact_once(tmp_path):
    """Chapters of one book build share temporary stores: an artifact two of them need at the same
    time is computed by one, and the other loads that one's result."""
    import subprocess
    import sys

    log = tmp_path / "computed.log"
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), str(log), name], stdout=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(log.read_text().split()) == 1, log.read_text()  # computed once
    assert outs[0] == outs[1] and outs[0][0] == log.read_text().strip()  # both load the one result
