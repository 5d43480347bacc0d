"""The training loop: resumable to identical weights, per-image noise rules as documented, steps with state."""

import math

import pytest
import torch
from scipy import stats
from torch import nn

from rsbook.core.noise import Gaussian
from rsbook.infra.artifacts import ArtifactStore
from rsbook.infra.data import ImageDataset
from rsbook.methods.augment import FixedSigma, GridSigma, NoiseAugmentedCE, PerSampleSigma, UniformSigma, perturb
from rsbook.training.classifier import TrainConfig, train, trained_model
from rsbook.methods.step import Batch
from rsbook.training.fit import FitConfig, fit, lr_factor


def _mnist_like(k=64):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (k, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = (images.float().mean((1, 2, 3)) > 127.5).long()
    return ImageDataset("mnist", images, labels)


CFG = TrainConfig(dataset="mnist", arch="lenet", sigma=0.25, epochs=2, batch_size=16, lr=0.01, schedule="cosine", augment=False)


class Killed(Exception):
    pass


def _die_in_epoch(monkeypatch, epoch: int):
    """Make the ``epoch``-th call of ImageDataset.batches (1-based) raise before its first batch."""
    calls = {"n": 0}
    real = ImageDataset.batches

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise Killed
        return real(self, *a, **k)

    monkeypatch.setattr(ImageDataset, "batches", dying)
    return real


def test_killed_training_resumes_to_identical_weights(tmp_path, monkeypatch):
    data = _mnist_like()
    ref, hist = train(CFG, data, work_dir=tmp_path / "a", progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]
    real = _die_in_epoch(monkeypatch, 2)
    with pytest.raises(Killed):
        train(CFG, data, work_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(ImageDataset, "batches", real)
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed, hist_b = train(CFG, data, work_dir=tmp_path / "b", progress=False)
    assert len(hist_b) == 2
    for (k, v), (_, w) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k


def _per_image_std(rule, n=2000, index=None):
    x = torch.zeros(n, 1, 28, 28)
    batch = Batch(x, torch.zeros(n, dtype=torch.long), torch.arange(n) if index is None else index)
    g = torch.Generator().manual_seed(0)
    return perturb(x, Gaussian(1.0), g, rule.sigmas(batch, g)).flatten(1).std(1)


def test_universal_rule_draws_sigma_uniformly_per_image():
    std = _per_image_std(UniformSigma(1.0))  # std of 784 draws: ~2.5% sampling error
    assert std.max() < 1.1 and std.min() < 0.05
    # sigma_i ~ U(0, 1): the per-image std is uniform, so its mean is 1/2 and its variance 1/12
    assert abs(std.mean().item() - 0.5) < 0.03 and abs(std.var().item() - 1 / 12) < 0.01
    fixed = _per_image_std(FixedSigma(0.5))
    assert torch.allclose(fixed, torch.full_like(fixed, 0.5), atol=0.05)


def test_grid_rule_uses_each_level_equally_often():
    grid = (0.12, 0.25, 0.5, 1.0)
    std = _per_image_std(GridSigma(grid), n=4000)
    nearest = torch.tensor(grid)[(std[:, None] - torch.tensor(grid)).abs().argmin(1)]
    assert torch.all((std / nearest - 1).abs() < 0.15)  # each image sits at one grid level
    counts = [int((nearest == s).sum()) for s in grid]
    assert stats.chisquare(counts).pvalue > 1e-3  # uniform over the grid


def test_per_sample_rule_looks_up_each_images_own_sigma():
    table = torch.linspace(0.1, 1.0, 50)
    index = torch.randperm(50, generator=torch.Generator().manual_seed(2))
    std = _per_image_std(PerSampleSigma(table), n=50, index=index)
    assert torch.allclose(std, table[index], rtol=0.1)
    with pytest.raises(ValueError, match="non-negative"):
        PerSampleSigma(torch.tensor([0.5, -0.1]))


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


class Anchored:
    """A step with state: cross-entropy plus a pull towards a frozen copy of the model taken at
    the start of every other epoch (as HeatSmoothing's timesteps do)."""

    def __init__(self):
        self.anchor = None
        self.started = []

    def start_epoch(self, model, epoch):
        self.started.append(epoch)
        if epoch % 2 == 0:
            self.anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state_dict(self):
        return {"anchor": self.anchor}

    def load_state_dict(self, state):
        self.anchor = state["anchor"]

    def __call__(self, model, batch, generator):
        logits = model(perturb(batch.x, Gaussian(0.1), generator))
        pull = sum(((p - self.anchor[k]) ** 2).sum() for k, p in model.named_parameters())
        return nn.functional.cross_entropy(logits, batch.y) + 10.0 * pull, {}


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 2))


def test_a_step_with_state_resumes_exactly(tmp_path, monkeypatch):
    data, cfg = _mnist_like(), FitConfig(epochs=3, batch_size=16, lr=0.05, optimizer="adam", schedule="constant")
    ref, _ = fit(_tiny(), Anchored(), cfg, tmp_path / "a", data=data, progress=False)
    real = _die_in_epoch(monkeypatch, 2)  # dies in epoch 2, after the anchor of epoch 0 was saved
    with pytest.raises(Killed):
        fit(_tiny(), Anchored(), cfg, tmp_path / "b", data=data, progress=False)
    monkeypatch.setattr(ImageDataset, "batches", real)
    step = Anchored()
    resumed, _ = fit(_tiny(), step, cfg, tmp_path / "b", data=data, progress=False)
    assert step.started == [1, 2]  # epoch 0 is not rerun; its anchor came from the checkpoint
    for (k, v), (_, w) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k


def test_fit_learns_a_separable_task_and_max_batches_limits_epochs():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (256,), generator=g)
    images = (torch.randint(0, 200, (256, 1, 28, 28), generator=g) + 55 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
    data = ImageDataset("mnist", images, labels)  # class 1 is brighter: separable by a linear model
    calls = {"n": 0}
    step = NoiseAugmentedCE(Gaussian(1.0), FixedSigma(0.05))

    def counted(model, batch, g):
        calls["n"] += 1
        return step(model, batch, g)

    torch.manual_seed(0)
    mean_brightness = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    _, hist = fit(mean_brightness, counted, FitConfig(epochs=10, batch_size=32, lr=0.1, optimizer="adam", schedule="constant"),
                  data=data, progress=False)
    assert hist[-1]["noisy_train_acc"] > 0.99 and hist[-1]["loss"] < 0.6 * hist[0]["loss"]
    calls["n"] = 0
    fit(_tiny(), counted, FitConfig(epochs=2, batch_size=32, lr=0.01, max_batches=3), data=data, progress=False)
    assert calls["n"] == 6


def test_learning_rate_schedules():
    cos = FitConfig(epochs=10, batch_size=1, lr=1.0, schedule="cosine")
    assert lr_factor(cos, 0, 5) == 1.0 and lr_factor(cos, 25, 5) == pytest.approx(0.5) and lr_factor(cos, 50, 5) == pytest.approx(0.0)
    step = FitConfig(epochs=90, batch_size=1, lr=1.0, schedule="step", step_every=30)
    assert [lr_factor(step, e * 7, 7) for e in (0, 29, 30, 60, 89)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    assert lr_factor(FitConfig(epochs=3, batch_size=1, lr=1.0, schedule="constant"), 100, 7) == 1.0
    assert math.isclose(lr_factor(cos, 10, 5), 0.5 * (1 + math.cos(math.pi * 0.2)))


def test_a_damaged_checkpoint_names_itself_and_the_fix(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"cannot resume from .*checkpoint\.pt.*delete it"):
        fit(_tiny(), NoiseAugmentedCE(Gaussian(1.0), FixedSigma(0.1)), FitConfig(epochs=1, batch_size=8, lr=0.1), tmp_path,
            data=_mnist_like(), progress=False)


def test_a_diverging_run_stops_with_the_cause_and_keeps_its_last_epoch(tmp_path):
    calls = []

    def step(model, batch, generator):  # a loss that turns to NaN at the 10th batch (epoch 2 of 8 batches each)
        calls.append(1)
        loss = model(batch.x).pow(2).mean()
        return (loss * float("nan") if len(calls) == 10 else loss), {}

    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 2: the run diverged \(epoch 1 is kept in the checkpoint.*"
                                                 r"Lower the learning rate \(now 0.5\)"):
        fit(_tiny(), step, FitConfig(epochs=3, batch_size=8, lr=0.5, schedule="constant"), tmp_path, data=_mnist_like(),
            progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    with pytest.raises(FloatingPointError, match="no epoch was kept"):  # without a work folder
        calls.clear()
        fit(_tiny(), step, FitConfig(epochs=1, batch_size=4, lr=0.5), None, data=_mnist_like(), progress=False)


def test_config_validation():
    with pytest.raises(ValueError, match="sigma_mode"):
        TrainConfig(sigma_mode="per-sample")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="noise must be one of"):
        TrainConfig(noise="cauchy")
    with pytest.raises(ValueError, match="optimizer"):
        FitConfig(epochs=1, batch_size=1, lr=0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        FitConfig(epochs=1, batch_size=1, lr=-1.0)
