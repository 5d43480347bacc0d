import pytest
import torch

from rsbook.artifacts import ArtifactStore
from rsbook.data import ImageDataset
from rsbook.train import TrainConfig, _add_noise, train, trained_model


def _mnist_like(k=64):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (k, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = (images.float().mean((1, 2, 3)) > 127.5).long()
    return ImageDataset("mnist", images, labels)


CFG = TrainConfig(dataset="mnist", arch="lenet", sigma=0.25, epochs=2, batch_size=16, lr=0.01, schedule="cosine", augment=False)


class Killed(Exception):
    pass


def test_killed_training_resumes_to_identical_weights(tmp_path, monkeypatch):
    data = _mnist_like()
    ref, hist = train(CFG, data, work_dir=tmp_path / "a", progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]

    calls = {"n": 0}
    real = ImageDataset.batches

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch dies before its first batch
            raise Killed
        return real(self, *a, **k)

    monkeypatch.setattr(ImageDataset, "batches", dying)
    with pytest.raises(Killed):
        train(CFG, data, work_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(ImageDataset, "batches", real)
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed, hist_b = train(CFG, data, work_dir=tmp_path / "b", progress=False)
    assert len(hist_b) == 2
    for (k, v), (_, w) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k


def test_universal_noise_has_per_image_sigma_below_max():
    cfg = TrainConfig(dataset="mnist", sigma=1.0, sigma_mode="universal")
    x = torch.zeros(2000, 1, 28, 28)
    std = _add_noise(x, cfg, torch.Generator().manual_seed(0)).flatten(1).std(1)
    assert std.max() < 1.1 and std.min() < 0.05  # std of 784 draws: ~2.5% sampling error
    # sigma_i ~ U(0, 1): the per-image std is uniform, so its mean is 1/2 and its variance 1/12
    assert abs(std.mean().item() - 0.5) < 0.03 and abs(std.var().item() - 1 / 12) < 0.01
    fixed = _add_noise(x, TrainConfig(dataset="mnist", sigma=0.5), torch.Generator().manual_seed(0)).flatten(1).std(1)
    assert torch.allclose(fixed, torch.full_like(fixed, 0.5), atol=0.05)


def test_trained_model_is_stored_in_fp16_and_reloaded(tmp_path):
    store = ArtifactStore(tmp_path)
    cfg = TrainConfig(dataset="mnist", arch="lenet", sigma=0.25, epochs=1, batch_size=32, lr=0.01, augment=False)
    m1 = trained_model(cfg, store, train_set=_mnist_like(), progress=False)
    sd = store.load_tensors(cfg)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    m2 = trained_model(cfg, store, train_set=None, progress=False)  # loads, needs no data
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(m1(x), m2(x))
    assert store.metadata(cfg, "pt")["history"][0]["epoch"] == 1


def test_config_validation():
    with pytest.raises(ValueError, match="sigma_mode"):
        TrainConfig(sigma_mode="per-sample")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
