"""The certification engine: same noise and counts as the published loop, whatever the packing."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rsbook.artifacts import config_key
from rsbook.bench import reference_certify
from rsbook.certify import Smooth, certificate
from rsbook.engine import _CPU_BATCHES, Engine
from rsbook.noise import Gaussian, Laplace, Uniform
from rsbook.runner import CertifyConfig, image_generator

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 8, 8)  # 64 coordinates
K = 5


def _linear(seed: int = 0) -> nn.Module:
    """A random linear classifier: its prediction under noise really depends on the noise."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, K)).eval()


def _images(m: int = 4) -> torch.Tensor:
    return torch.rand((m, *SHAPE), generator=torch.Generator().manual_seed(1))


def _items(xs, seed=0):
    return [(i, x, image_generator(seed, i, "cpu")) for i, x in enumerate(xs)]


def _engine(**kw) -> Engine:
    kw.setdefault("channels_last", False)
    return Engine(_linear(), K, Gaussian(0.5), **kw)


def test_counts_equal_the_published_loop_exactly():
    # Same per-image seed, blocks of 400, plain fp32: the engine draws the reference loop's noise.
    xs = _images()
    model = _linear()
    engine = _engine()
    got = dict(engine.counts(_items(xs), (100, 1000), batch_size=256))
    for i, x in enumerate(xs):
        ref0, ref = reference_certify(model, x, 100, 1000, 0.001, Gaussian(0.5), K, seed=i)
        np.testing.assert_array_equal(got[i][0], ref0)
        np.testing.assert_array_equal(got[i][1], ref)
        assert (ref > 0).sum() >= 2  # the noise matters, so equality is not trivial
    # ... and a different seed gives different counts (the check above can fail)
    ref0, ref = reference_certify(model, xs[0], 100, 1000, 0.001, Gaussian(0.5), K, seed=12345)
    assert not np.array_equal(ref, got[0][1])


@pytest.mark.parametrize("noise", [Gaussian(0.5), Laplace(0.5), Uniform(0.5)], ids=repr)
def test_batch_size_and_packing_do_not_change_counts(noise):
    xs = _images(5)
    runs = []
    for bs in (7, 64, 333, 5000):
        engine = Engine(_linear(), K, noise, channels_last=False)
        runs.append(dict(engine.counts(_items(xs), (30, 250), batch_size=bs)))
    alone = {i: dict(Engine(_linear(), K, noise, channels_last=False).counts(_items(xs)[i : i + 1], (30, 250), 64))[i]
             for i in range(len(xs))}
    for run in runs[1:] + [alone]:
        for i in range(len(xs)):
            np.testing.assert_array_equal(run[i], runs[0][i])
    for c in runs[0].values():
        assert list(c.sum(1)) == [30, 250]


def test_phases_draw_fresh_noise_and_yield_in_order():
    engine = _engine()
    out = list(engine.counts(_items(_images(6)), (500, 500), batch_size=128))
    assert [k for k, _ in out] == list(range(6))
    # two phases of the same size from one stream: different draws, so (almost surely) different counts
    assert any(not np.array_equal(c[0], c[1]) for _, c in out)


def test_padded_static_batches_count_only_real_samples():
    xs = _images(3)
    plain = dict(_engine().counts(_items(xs), (20, 300), batch_size=128))
    engine = _engine()
    engine._prepare(None)
    engine.compiled = True  # take the static-shape path (padding) without paying for a compile
    padded = dict(engine.counts(_items(xs), (20, 300), batch_size=128))
    assert engine.stats["padded"] > 0
    for i in plain:
        np.testing.assert_array_equal(padded[i], plain[i])


def test_torch_compile_path_matches_eager():
    pytest.importorskip("torch._inductor")
    import shutil

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


def test_bad_precision_and_batch_size_are_refused():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        _engine(precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        _engine(precision="fp64")
    with pytest.raises(ValueError, match="batch_size"):
        list(_engine().counts(_items(_images(1)), (10,), batch_size=0))
    with pytest.raises(ValueError, match="sample size"):
        list(_engine().counts(_items(_images(1)), (10, 0), batch_size=10))
    with pytest.raises(ValueError, match="same shape"):
        items = _items(_images(1)) + [(9, torch.rand(1, 4, 4), None)]
        list(_engine().counts(items, (10,), batch_size=10))


def test_automatic_batch_size_is_a_swept_candidate():
    engine = _engine()
    engine._prepare(None)
    bs = engine.batch_size_for(SHAPE, None, seconds=0.02)
    assert bs in _CPU_BATCHES
    counts = dict(engine.counts(_items(_images(2)), (10, 100), batch_size=None))
    assert list(counts[1].sum(1)) == [10, 100]


def test_certify_many_equals_certify_one_by_one():
    xs = _images(4)
    smooth = Smooth(_linear(), K, 0.5)
    many = list(smooth.certify_many(_items(xs), 50, 500, 0.01, batch_size=100))
    for i, x in enumerate(xs):
        assert many[i] == (i, *smooth.certify(x, 50, 500, 0.01, 100, generator=image_generator(0, i, "cpu")))


def test_certificate_from_counts():
    assert certificate(np.array([0, 10]), np.array([0, 100]), 0.01, Gaussian(1.0))[0] == 1
    assert certificate(np.array([10, 0]), np.array([60, 40]), 0.01, Gaussian(1.0)) == (-1, 0.0)


def test_training_mode_batch_norm_is_refused():
    # Batch statistics would couple the samples, so no certificate would hold.
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, K))  # train mode
    with pytest.raises(ValueError, match="eval"):
        list(Engine(model, K, Gaussian(0.5)).counts(_items(_images(1)), (10,), batch_size=10))
    counts = dict(Engine(model.eval(), K, Gaussian(0.5)).counts(_items(_images(1)), (10,), batch_size=10))
    assert counts[0].sum() == 10


def test_committed_certification_artifacts_keep_their_keys():
    # Adding CertifyConfig.precision must not orphan logs computed before it existed.
    metas = sorted((REPO / "book" / "artifacts").glob("*/certifyconfig-*.json"))
    assert metas, "no committed certification artifacts found"
    for meta in metas:
        d = json.loads(meta.read_text())["config"]
        d.pop("type")
        model = d.pop("model")
        cfg = CertifyConfig(model=_Frozen(model), **d)
        assert cfg.precision == "fp32"
        assert config_key(cfg) == meta.stem, meta
    assert config_key(CertifyConfig(model=None, precision="bf16")) != config_key(CertifyConfig(model=None))


class _Frozen(dict):
    """A dict standing in for the model's config dataclass (``asdict`` copies it as is)."""


def test_block_plan_never_crosses_a_phase():
    from rsbook.engine import _block_plan

    assert _block_plan((100, 1000), 400) == [100, 400, 400, 200]
    assert _block_plan((800,), 400) == [400, 400]
