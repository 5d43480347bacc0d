"""The dataset-level runner: resumable, one flushed row per image, nothing lost or duplicated."""

import pandas as pd
import pytest
import torch

from rsbook.certify import Smooth
from rsbook.data import ImageDataset
from rsbook.metrics import acr, certified_accuracy, envelope
from rsbook.runner import LOG_COLUMNS, certify_dataset, read_log

from conftest import CountingClassifier, ThresholdClassifier


def _dataset(k: int = 12) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (k, 1, 4, 4), generator=g, dtype=torch.uint8)
    labels = (images[:, 0, 0, 0].float() / 255 > 0.5).long()
    return ImageDataset("synthetic", images, labels, indices=torch.arange(100, 100 + k))


def _smooth(fail_after=None):
    return Smooth(CountingClassifier(ThresholdClassifier(0.5), fail_after=fail_after), 2, 0.3)


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path):
    ds = _dataset()
    full = certify_dataset(_smooth(), ds, 20, 200, 0.01, 50, tmp_path / "full.tsv", seed=3, progress=False)
    # Images share batches of 50: 27 calls = 1350 samples finish 6 images of 220 (1320) and part of the 7th
    with pytest.raises(KeyboardInterrupt):
        certify_dataset(_smooth(fail_after=27), ds, 20, 200, 0.01, 50, tmp_path / "part.tsv", seed=3, progress=False)
    assert len(read_log(tmp_path / "part.tsv")) == 6
    # a half-written last row (killed during the write) is dropped, not parsed
    with open(tmp_path / "part.tsv", "a") as f:
        f.write("106\t1\t1\t0.12")
    resumed_model = _smooth()
    resumed = certify_dataset(resumed_model, ds, 20, 200, 0.01, 50, tmp_path / "part.tsv", seed=3, progress=False)
    assert resumed_model.base_classifier.samples == (12 - 6) * 220  # only the missing images ran
    assert list(resumed["idx"]) == list(range(100, 112))
    on_disk = read_log(tmp_path / "part.tsv")
    assert not on_disk["idx"].duplicated().any() and len(on_disk) == 12
    cols = ["idx", "label", "predict", "radius", "correct"]
    pd.testing.assert_frame_equal(resumed[cols], full[cols])  # same rows as an uninterrupted run


def test_log_format_and_full_precision(tmp_path):
    ds = _dataset(3)
    log = certify_dataset(_smooth(), ds, 10, 100, 0.01, 100, tmp_path / "log.tsv", progress=False)
    header = (tmp_path / "log.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == LOG_COLUMNS
    for r in log["radius"]:
        assert repr(float(r)) in (tmp_path / "log.tsv").read_text()
    assert set(log["correct"]) <= {0, 1}


def test_metrics_on_a_known_log():
    log = pd.DataFrame({"idx": [0, 1, 2, 3], "label": [1, 1, 0, 0], "predict": [1, 0, -1, 0],
                        "radius": [0.5, 0.9, 0.0, 0.2], "correct": [1, 0, 0, 1], "time": [1.0] * 4})
    assert list(certified_accuracy(log, [0.0, 0.2, 0.3, 0.6])) == [0.5, 0.5, 0.25, 0.0]
    assert acr(log) == pytest.approx((0.5 + 0.2) / 4)
    other = log.assign(radius=[0.1, 0.9, 0.0, 0.1])
    env = envelope({"a": log, "b": other}, [0.0, 0.15])
    assert list(env["certified_accuracy"]) == [0.5, 0.5] and env["best"].iloc[1] == "a"
