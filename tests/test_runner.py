"""The dataset-level runner: resumable, one flushed row per image, nothing lost or duplicated."""

import numpy as np
import pandas as pd
import pytest
import torch

from rsbook.core.certify import Smooth
from rsbook.infra.data import ImageDataset
from rsbook.core.metrics import acr, certified_accuracy, envelope
from rsbook.core.noise import Gaussian, Laplace, make_noise
from rsbook.core.streams import image_generator
from rsbook.runs.runner import LOG_COLUMNS, certify_dataset, read_log

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
    assert set(log["noise"]) == {"gaussian"} and set(log["sigma"]) == {0.3}


def test_per_image_noise_is_logged_and_used(tmp_path):
    # Each image's row equals certifying it alone with its own noise, and names that noise.
    ds = _dataset(6)
    noises = {int(i): (Laplace(0.2) if int(i) % 2 else Gaussian(0.1 + 0.05 * (int(i) - 100))) for i in ds.indices}
    log = certify_dataset(Smooth(ThresholdClassifier(0.5), 2), ds, 20, 300, 0.01, 64, tmp_path / "mix.tsv", seed=1,
                          progress=False, noise=noises.__getitem__)
    for row in log.itertuples():
        nz = noises[row.idx]
        assert (row.noise, row.sigma) == (nz.name, nz.sigma)
        alone = Smooth(ThresholdClassifier(0.5), 2, nz).certify(ds[list(ds.indices).index(row.idx)][0], 20, 300, 0.01, 64,
                                                               generator=image_generator(1, row.idx, "cpu"))
        assert (row.predict, row.radius) == alone
    with pytest.raises(ValueError, match=r"image 100, noise: sigma must be a positive"):
        certify_dataset(Smooth(ThresholdClassifier(0.5), 2), ds, 20, 300, 0.01, 64, tmp_path / "bad.tsv", progress=False,
                        noise=lambda idx: ("gaussian", -1.0))


def test_given_classes_skip_selection(tmp_path):
    ds = _dataset(5)
    counting = CountingClassifier(ThresholdClassifier(0.5))
    wrong = {int(i): 1 - int(y) for i, y in zip(ds.indices, ds.labels)}
    log = certify_dataset(Smooth(counting, 2, 0.3), ds, 50, 200, 0.01, 100, tmp_path / "given.tsv", progress=False,
                          classes=wrong)
    assert counting.samples == 5 * 200  # the n0 selection draws are never made
    assert set(log.loc[log["predict"] != -1, "predict"]) <= {0, 1}
    assert not log["correct"].any()  # a wrong class given is never "correct"


def test_committed_logs_from_before_the_noise_columns_still_read():
    import json
    from pathlib import Path

    metas = sorted((Path(__file__).resolve().parents[1] / "book" / "artifacts").glob("*/certifyconfig-*.json"))
    meta = json.loads(metas[0].read_text())
    log = read_log(metas[0].with_suffix(".tsv"), make_noise(meta["config"]["noise"], meta["config"]["sigma"]))
    assert tuple(log.columns) == LOG_COLUMNS and len(log) == meta["images"]
    assert set(log["sigma"]) == {meta["config"]["sigma"]}


def test_a_partial_log_in_the_old_format_is_upgraded_and_resumed(tmp_path):
    ds = _dataset(4)
    full = certify_dataset(_smooth(), ds, 20, 200, 0.01, 50, tmp_path / "full.tsv", seed=3, progress=False)
    old = full.iloc[:2][["idx", "label", "predict", "radius", "correct", "time"]]
    old.to_csv(tmp_path / "old.tsv", sep="\t", index=False)
    model = _smooth()
    resumed = certify_dataset(model, ds, 20, 200, 0.01, 50, tmp_path / "old.tsv", seed=3, progress=False)
    assert model.base_classifier.samples == 2 * 220
    cols = ["idx", "label", "predict", "radius", "correct", "noise", "sigma"]
    pd.testing.assert_frame_equal(resumed[cols], full[cols])


def test_metrics_on_a_known_log():
    log = pd.DataFrame({"idx": [0, 1, 2, 3], "label": [1, 1, 0, 0], "predict": [1, 0, -1, 0],
                        "radius": [0.5, 0.9, 0.0, 0.2], "correct": [1, 0, 0, 1], "time": [1.0] * 4})
    assert list(certified_accuracy(log, [0.0, 0.2, 0.3, 0.6])) == [0.5, 0.5, 0.25, 0.0]
    assert acr(log) == pytest.approx((0.5 + 0.2) / 4)
    other = log.assign(radius=[0.1, 0.9, 0.0, 0.1])
    env = envelope({"a": log, "b": other}, [0.0, 0.15])
    assert list(env["certified_accuracy"]) == [0.5, 0.5] and env["best"].iloc[1] == "a"


def test_chapter_0_plan_is_exactly_its_committed_artifacts():
    # The plan that announces a run's work lists the same configs the chapter computes: at the
    # published settings every planned model and log is committed, and nothing committed is unplanned.
    from pathlib import Path

    from rsbook.infra.artifacts import config_key
    from rsbook.papers import cohen2019

    plan = cohen2019.planned_work("cpu")
    trainings, certs = plan.trainings, plan.certifications
    folder = Path(__file__).resolve().parents[1] / "book" / "artifacts" / cohen2019.CHAPTER
    committed = {p.stem for p in folder.glob("*config-*.json")}
    planned = {config_key(c) for c in trainings} | {config_key(p.config) for p in certs}
    assert planned == committed
    assert sum(p.images for p in certs) == (4 + 4) * 500 + 16 * 100 + 3 * 500 + 2 * 500  # fixed, universal, grid, MNIST, sequential



def test_chapter_0_claims_from_known_logs():
    # The claims table on hand-made logs at the cpu settings (n = 1,000, alpha = 0.001): the radius cap
    # there is sigma * Phi^-1(0.001^(1/1000)) = 2.462 sigma, at n_max = 100,000 it is 3.81 sigma.
    from rsbook.papers import cohen2019

    def log(radius, k=100):
        radius = np.broadcast_to(np.asarray(radius, float), (k,))
        return pd.DataFrame({"idx": np.arange(k) * 20, "correct": 1, "radius": radius, "predict": 0})

    s = cohen2019.settings("cpu")
    logs = {"sigma=0.12": log(0.3), "sigma=0.25": log(0.55), "sigma=0.50": log([1.1] * 23 + [0.9] * 77), "sigma=1.00": log(0.0)}
    grid = {(t, sm): log(1.0 if t == sm else 0.5, 30) for t in s.sigmas for sm in s.sigmas}
    seq = {"sigma=0.25": log(0.8), "sigma=0.50": log(1.6)}
    points, above = cohen2019.sequential_points(seq, 1000, 0.001)
    assert points == above == {"sigma=0.25": (0.75, 1.0), "sigma=0.50": (1.5, 1.0)}
    assert cohen2019.sequential_points(seq, 100_000, 0.001)[1] == {}  # below the caps 0.95 and 1.91 of n = 100,000
    rows = {r.claim: r for r in cohen2019.claims("cpu", s, 1000, logs, grid, {sg: sg for sg in s.sigmas}, 30, seq).rows}
    assert len(rows) == 10
    clean = rows["clean accuracy of g falls as sigma grows (0.12 > 0.25 > 0.50 > 1.00)"]
    assert (clean.paper, clean.ours, clean.verdict) == ("0.81 > 0.75 > 0.65 > 0.47", "1.00 > 1.00 > 1.00 > 1.00", "inconclusive")
    fixed = {(r.claim.split("r = ")[1].split(",")[0], r.verdict) for r in rows.values() if "(fixed n = 1,000)" in r.claim}
    # 1.00 vs 0.43; above the cap 0.62; 0.23 vs 0.23; 0 of 100 images vs 0.14
    assert fixed == {("0.5", "not reproduced"), ("0.75", "not comparable"), ("1.0", "reproduced"), ("1.5", "not reproduced")}
    assert "above our cap 0.62" in rows["certified accuracy at r = 0.75, sigma = 0.25 (fixed n = 1,000)"].reason
    matched = rows["for each smoothing sigma, the model trained at that sigma has the best ACR"]
    assert matched.verdict == "reproduced" and matched.ours.endswith("0.12 → 0.12, 0.25 → 0.25, 0.5 → 0.5, 1 → 1")
    sequential = rows["certified accuracy at r = 0.75, sigma = 0.25 (sequential, n_max = 100,000)"]
    assert sequential.verdict == "not reproduced" and sequential.reason == "above the cap of fixed n = 1,000; sequential certifier, appendix A2"
    note = cohen2019.setting_note(s, 1000, 500, 20)
    assert note.startswith("**Setting.** Ours: cnn4, 20 epochs, n = 1,000, 500 test images (every 20th). Paper: cifar_resnet110, "
                           "90 epochs, n = 100,000")

def test_announced_time_follows_the_measured_rates(tmp_path, capsys):
    import json

    from rsbook.infra.artifacts import ArtifactStore
    from rsbook.book.eta import Planned, announce
    from rsbook.runs.runner import CertifyConfig
    from rsbook.training.classifier import TrainConfig

    store = ArtifactStore(tmp_path)
    model = TrainConfig(arch="cnn4", epochs=4)
    # stored evidence: 100 images x 1,100 samples in 55 s (2,000 samples/s); 30 s per full epoch
    (tmp_path / "certifyconfig-aaaaaaaaaaaa.json").write_text(json.dumps(
        {"config": {"type": "CertifyConfig", "model": {"arch": "cnn4"}, "n0": 100, "n": 1000}, "images": 100, "certify_seconds": 55.0}))
    (tmp_path / "trainconfig-bbbbbbbbbbbb.json").write_text(json.dumps(
        {"config": {"type": "TrainConfig", "arch": "cnn4", "dataset": "cifar10", "train_subset": 0},
         "history": [{"seconds": 25.0}, {"seconds": 35.0}]}))
    plan = [Planned(CertifyConfig(model=model, n0=100, n=9_900), "cnn4", 50)]
    est = announce(store, [model], plan, full_train={"cifar10": 50_000})
    assert est == pytest.approx(50 * 10_000 / 2_000 + 4 * 30.0)
    assert "1 certification logs (500,000 forward passes) and trains 1 models" in capsys.readouterr().out
    assert announce(store, [], [Planned(CertifyConfig(model=model), "resnet", 1)], {}) is None
    assert "No rate was measured yet for certifying resnet" in capsys.readouterr().out


def test_clean_classes_are_the_base_classifiers_answers_on_clean_images():
    from rsbook.runs.runner import clean_classes

    ds = _dataset(12)  # labels: first pixel > 0.5, exactly what ThresholdClassifier(0.5) answers
    got = clean_classes(Smooth(ThresholdClassifier(0.5), 2, 0.3), ds, batch_size=5)
    assert got == {int(i): int(y) for i, y in zip(ds.indices, ds.labels)}


def test_chapter_1_plan_is_exactly_its_committed_artifacts():
    from pathlib import Path

    from rsbook.infra.artifacts import config_key
    from rsbook.papers import score_denoising

    plan = score_denoising.planned_work("cpu")
    models, certs = plan.trainings, plan.certifications
    folder = Path(__file__).resolve().parents[1] / "book" / "artifacts" / score_denoising.CHAPTER
    committed = {p.stem for p in folder.glob("*config-*.json")}
    planned = {config_key(c) for c in models} | {config_key(p.config) for p in certs}
    assert planned == committed


def test_chapter_3_plan_is_exactly_its_committed_artifacts():
    # the baseline is chapter 1's committed classifier; everything else the chapter computes is in its own folder
    from pathlib import Path

    from rsbook.infra.artifacts import config_key
    from rsbook.papers import heat_smoothing, score_denoising

    plan = heat_smoothing.planned_work("cpu")
    models, certs, attacks = plan.trainings, plan.certifications, plan.other
    root = Path(__file__).resolve().parents[1] / "book" / "artifacts"
    committed = {p.stem for p in (root / heat_smoothing.CHAPTER).glob("*config-*.json")}
    baseline = config_key(heat_smoothing.model_config("baseline", "cpu"))
    assert (root / score_denoising.CHAPTER / f"{baseline}.pt").is_file()
    planned = {config_key(c) for c in models} | {config_key(p.config) for p in certs} | {config_key(a) for a in attacks}
    assert planned - {baseline} == committed
