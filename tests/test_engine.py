"""The certification engine: the published loop's noise and counts, whatever the packing or noise mix."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from rsbook.infra.artifacts import config_key
from rsbook.core.certify import Smooth
from rsbook.core.engine import Engine, Item, batch_candidates
from rsbook.core.noise import Gaussian, Laplace, Uniform, make_noise
from rsbook.core.reference import reference_certify
from rsbook.core.streams import image_generator
from rsbook.runs.runner import CertifyConfig, NoiseTable

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 8, 8)  # 64 coordinates
K = 5


def _linear(seed: int = 0) -> nn.Module:
    """A random linear classifier: its prediction under noise really depends on the noise."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, K)).eval()


class FirstCoordinate(nn.Module):
    """Outputs the first pixel: under noise, exactly ``x_0 + eps_0``."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x.flatten(1)[:, :1]


class SigmaEcho(nn.Module):
    """A noise-conditioned model that returns the noise level it is given, per row."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma):
        return sigma[:, None]


def _images(m: int = 4) -> torch.Tensor:
    return torch.rand((m, *SHAPE), generator=torch.Generator().manual_seed(1))


def _items(xs, seed=0, noises=None):
    return [Item(i, x, image_generator(seed, i, "cpu"), None if noises is None else noises[i]) for i, x in enumerate(xs)]


def _engine(model=None, noise=Gaussian(0.5), **kw) -> Engine:
    kw.setdefault("channels_last", False)
    return Engine(model or _linear(), K, noise, **kw)


def test_counts_equal_the_published_loop_exactly():
    # Same per-image seed, blocks of 400, plain fp32: the engine draws the reference loop's noise.
    xs = _images()
    model = _linear()
    got = dict(_engine().counts(_items(xs), (100, 1000), batch_size=256))
    for i, x in enumerate(xs):
        ref0, ref = reference_certify(model, x, 100, 1000, 0.001, Gaussian(0.5), K, seed=i)
        np.testing.assert_array_equal(got[i][0], ref0)
        np.testing.assert_array_equal(got[i][1], ref)
        assert (ref > 0).sum() >= 2  # the noise matters, so equality is not trivial
    # ... and a different seed gives different counts (the check above can fail)
    ref0, ref = reference_certify(model, xs[0], 100, 1000, 0.001, Gaussian(0.5), K, seed=12345)
    assert not np.array_equal(ref, got[0][1])


def test_each_item_is_smoothed_with_its_own_noise():
    # One run, four sigmas, and an engine default that no item uses: every item's counts are
    # those of the published loop at that item's sigma.
    xs = _images(4)
    sigmas = [0.12, 0.25, 0.5, 1.0]
    model = _linear()
    got = dict(_engine(noise=Gaussian(3.0)).counts(_items(xs, noises=[Gaussian(s) for s in sigmas]), (50, 900), batch_size=128))
    for i, (x, s) in enumerate(zip(xs, sigmas)):
        ref0, ref = reference_certify(model, x, 50, 900, 0.001, Gaussian(s), K, seed=i)
        np.testing.assert_array_equal(got[i][0], ref0)
        np.testing.assert_array_equal(got[i][1], ref)
    # (name, sigma) pairs and floats are accepted as noises too, and mean the same
    specs = [("gaussian", 0.12), 0.25, Gaussian(0.5), ("Gaussian", 1.0)]
    again = dict(_engine(noise=None).counts(_items(xs, noises=specs), (50, 900), batch_size=128))
    for i in got:
        np.testing.assert_array_equal(again[i], got[i])


@pytest.mark.parametrize("noise", [Gaussian(0.5), Laplace(0.5), Uniform(0.5)], ids=repr)
def test_batch_size_and_packing_do_not_change_counts(noise):
    xs = _images(5)
    runs = []
    for bs in (7, 64, 333, 5000):
        runs.append(dict(_engine(noise=noise).counts(_items(xs), (30, 250), batch_size=bs)))
    alone = {i: dict(_engine(noise=noise).counts(_items(xs)[i : i + 1], (30, 250), 64))[i] for i in range(len(xs))}
    for run in runs[1:] + [alone]:
        for i in range(len(xs)):
            np.testing.assert_array_equal(run[i], runs[0][i])
    for c in runs[0].values():
        assert list(c.sum(1)) == [30, 250]


def test_values_are_the_model_outputs_in_draw_order():
    # f(x) = x_0, so f(x + eps) = x_0 + eps_0. The engine's values must be exactly torch's own
    # Gaussian draws from the item's seed (one block of 300 < 400), in order, and N(x_0, sigma^2).
    x = torch.full(SHAPE, 0.3)
    engine = Engine(FirstCoordinate(), None, Gaussian(0.7), channels_last=False)
    ((key, (vals,)),) = list(engine.values([Item("a", x, torch.Generator().manual_seed(9))], (300,), batch_size=64))
    eps = torch.randn((300, *SHAPE), generator=torch.Generator().manual_seed(9)) * 0.7
    assert key == "a" and vals.shape == (300, 1)
    torch.testing.assert_close(vals[:, 0], 0.3 + eps.flatten(1)[:, 0], rtol=0, atol=1e-6)
    big = list(engine.values([Item(0, x, torch.Generator().manual_seed(1))], (20_000,), batch_size=512))[0][1][0]
    assert stats.kstest(big[:, 0].numpy(), stats.norm(0.3, 0.7).cdf).pvalue > 1e-3


def test_values_of_mixed_items_and_phases_are_routed_to_their_owner():
    # A noise-conditioned model that echoes its sigma: every value must be its own item's level,
    # whatever the packing, and each phase has its own length.
    xs = _images(6)
    sigmas = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    engine = Engine(SigmaEcho(), None, None, channels_last=False, noise_conditioned=True)
    items = [Item(i, x, None, Gaussian(s), sizes=(7 + i, 50)) for i, (x, s) in enumerate(zip(xs, sigmas))]
    out = dict(engine.values(items, (1,), batch_size=32))
    for i, s in enumerate(sigmas):
        assert [v.shape[0] for v in out[i]] == [7 + i, 50]
        for v in out[i]:
            assert torch.allclose(v, torch.full_like(v, s))


def test_padded_static_batches_count_only_real_samples():
    xs = _images(3)
    plain = dict(_engine().counts(_items(xs), (20, 300), batch_size=128))
    engine = _engine(static_batches=True)  # the compiled path's static shapes, without a compile
    padded = dict(engine.counts(_items(xs), (20, 300), batch_size=128))
    assert engine.stats["padded"] > 0
    for i in plain:
        np.testing.assert_array_equal(padded[i], plain[i])


def test_torch_compile_path_matches_eager():
    pytest.importorskip("torch._inductor")
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler for torch.compile on CPU")
    xs = _images(2)
    eager = dict(_engine().counts(_items(xs), (20, 200), batch_size=64))
    engine = _engine(compile=True)
    compiled = dict(engine.counts(_items(xs), (20, 200), batch_size=64))
    assert engine.compiled
    for i in eager:  # fp32 either way; summation order may differ, so allow a flipped argmax or two
        assert np.abs(compiled[i] - eager[i]).sum() <= 4


def test_bf16_is_a_different_but_close_model():
    xs = _images(2)
    fp32 = dict(_engine().counts(_items(xs), (50, 2000), batch_size=256))
    bf16 = dict(_engine(precision="bf16").counts(_items(xs), (50, 2000), batch_size=256))
    for i in fp32:
        assert list(bf16[i].sum(1)) == [50, 2000]
        assert np.abs(bf16[i][1] - fp32[i][1]).max() <= 100  # same noise; bf16 flips few argmaxes


def test_bad_items_get_errors_naming_the_field_and_the_fix():
    xs = _images(2)
    run = lambda items: list(_engine(noise=None).counts(items, (10,), batch_size=10))  # noqa: E731
    with pytest.raises(ValueError, match=r"item 1, field 'noise': sigma must be a positive finite number.*got -0.1"):
        run([Item(0, xs[0], None, 0.25), Item(1, xs[1], None, ("gaussian", -0.1))])
    with pytest.raises(ValueError, match=r"item 'b', field 'noise': unknown noise 'cauchy'; choose one of"):
        run([Item("b", xs[0], None, ("cauchy", 0.5))])
    with pytest.raises(ValueError, match=r"item 9, field 'x': shape \(1, 4, 4\) differs from this run's \(1, 8, 8\).*run them separately"):
        run([Item(0, xs[0], None, 0.25), Item(9, torch.rand(1, 4, 4), None, 0.25)])
    with pytest.raises(ValueError, match=r"item 0, field 'noise': no noise given and no default"):
        run([Item(0, xs[0])])
    with pytest.raises(ValueError, match=r"item 0, field 'sizes': every sample size must be >= 1"):
        run([Item(0, xs[0], None, 0.25, sizes=(5, 0))])


def test_bad_engine_arguments_are_refused():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        _engine(precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        _engine(precision="fp64")
    with pytest.raises(ValueError, match="batch_size"):
        list(_engine().counts(_items(_images(1)), (10,), batch_size=0))
    with pytest.raises(ValueError, match="sample size"):
        list(_engine().counts(_items(_images(1)), (10, 0), batch_size=10))
    with pytest.raises(ValueError, match="num_classes"):
        list(Engine(FirstCoordinate(), None, Gaussian(0.5)).counts(_items(_images(1)), (10,), batch_size=10))
    with pytest.raises(ValueError, match="noise-conditioned: pass sigma"):
        Engine(SigmaEcho(), None, None, noise_conditioned=True).forward(torch.rand(2, *SHAPE))


def test_automatic_batch_size_is_a_swept_candidate():
    engine = _engine()
    bs = engine.batch_size_for(SHAPE, None, seconds=0.02)
    assert bs in batch_candidates("cpu")
    counts = dict(engine.counts(_items(_images(2)), (10, 100), batch_size=None))
    assert list(counts[1].sum(1)) == [10, 100]


def test_certify_many_equals_certify_one_by_one():
    xs = _images(4)
    smooth = Smooth(_linear(), K, 0.5)
    many = list(smooth.certify_many(_items(xs), 50, 500, 0.01, batch_size=100))
    for i, x in enumerate(xs):
        assert (many[i].key, *many[i].pair()) == (i, *smooth.certify(x, 50, 500, 0.01, 100, generator=image_generator(0, i, "cpu")))


def test_training_mode_batch_norm_is_refused():
    # Batch statistics would couple the samples, so no certificate would hold.
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, K))  # train mode
    with pytest.raises(ValueError, match="eval"):
        list(Engine(model, K, Gaussian(0.5)).counts(_items(_images(1)), (10,), batch_size=10))
    counts = dict(Engine(model.eval(), K, Gaussian(0.5)).counts(_items(_images(1)), (10,), batch_size=10))
    assert counts[0].sum() == 10


def test_committed_certification_artifacts_keep_their_keys():
    # Fields added to CertifyConfig (precision, selection) must not orphan logs computed before them.
    metas = sorted((REPO / "book" / "artifacts").glob("*/certifyconfig-*.json"))
    assert metas, "no committed certification artifacts found"
    for meta in metas:
        d = json.loads(meta.read_text())["config"]
        d.pop("type")
        model = d.pop("model")
        # configs hold a Noise now; stored as the old (noise, sigma) fields, so the key is the stored one
        name, sigma = d.pop("noise"), d.pop("sigma")
        rule = d.pop("noise_rule", None)  # a noise per image (chapter 2): a NoiseTable, stored as its fields
        if rule is not None:
            assert rule.pop("type") == "NoiseTable", meta
            rule = NoiseTable(rule["family"], tuple((int(i), float(s)) for i, s in rule["sigmas"]))
        cfg = CertifyConfig(model=_Frozen(model), noise=None if rule is not None else make_noise(name, sigma), noise_rule=rule, **d)
        assert cfg.precision == "fp32"
        # chapter 3's deterministic models (no noise in training, or HeatSmoothing) are certified from the clean input
        deterministic = "timesteps" in model or model.get("method") == "pgd" or model.get("sigma") == 0.0
        # (chapter 5 certifies chapter 3's HeatSmoothing model the same way)
        clean = meta.parent.name in ("03_heat_smoothing", "05_leaderboard") and deterministic
        assert cfg.selection == ("clean" if clean else "noise"), meta
        assert config_key(cfg) == meta.stem, meta
    assert config_key(CertifyConfig(model=None, precision="bf16")) != config_key(CertifyConfig(model=None))
    assert config_key(CertifyConfig(model=None, selection="clean")) != config_key(CertifyConfig(model=None))


class _Frozen(dict):
    """A dict standing in for the model's config dataclass (``asdict`` copies it as is)."""


def test_a_run_too_small_to_repay_a_sweep_skips_it():
    from conftest import CountingClassifier

    counting = CountingClassifier(_linear())
    engine = Engine(counting, K, Gaussian(0.5), channels_last=False)
    assert engine.batch_size_for(SHAPE, None, planned=1_000) == 128  # the largest candidate <= 1000 / 4
    assert engine.batch_size_for(SHAPE, None, planned=100) == 64
    assert counting.calls == 0  # no forward pass was spent choosing
    engine.batch_size_for(SHAPE, None, seconds=0.01, planned=10**6)
    assert counting.calls > 0  # a long run sweeps
