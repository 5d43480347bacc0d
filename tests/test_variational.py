"""Variational smoothing (chapter 4): the input-dependent certificate, dual smoothing, the selector.

Every check is against a closed form (chi-square / normal CDFs, numerical integration), a
Monte Carlo estimate of a known probability, or a synthetic model whose smoothed answer is
known (:mod:`rsbook.models.synthetic`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from rsbook.core import Smooth, stream
from rsbook.core.varying import scale_tv, shift_tv, varying_radius, worst_case
from rsbook.methods.dual import DualSettings, dual_certify, selector_draws
from rsbook.models.selector import FixedInputs, NoiseSelector
from rsbook.models.synthetic import LinearSelector, NormBandClassifier


# -- the Neyman-Pearson worst case -------------------------------------------------------------

def _ball_probs(c: np.ndarray, t: float, mean: np.ndarray, sigma: float) -> float:
    """P(||z - c|| <= t) for z ~ N(mean, sigma^2 I): a non-central chi-square CDF."""
    d = len(c)
    return float(stats.ncx2.cdf(t**2 / sigma**2, d, float(np.sum((mean - c) ** 2)) / sigma**2))


@pytest.mark.parametrize("sigma1, r, d", [(0.3, 0.1, 5), (0.2, 0.1, 5), (0.22, 0.3, 5), (0.26, 0.2, 40)])
def test_worst_case_is_attained_by_the_neyman_pearson_ball_checked_by_monte_carlo(sigma1, r, d):
    # sample z under P and Q and measure the optimal ball (or its complement) directly
    rng = np.random.default_rng(0)
    sigma0, p = 0.25, 0.9
    delta = np.zeros(d)
    delta[0] = r
    gap = sigma1**2 - sigma0**2
    c = -delta * sigma0**2 / gap
    zP = sigma0 * rng.standard_normal((400_000, d))
    zQ = delta + sigma1 * rng.standard_normal((400_000, d))
    distP, distQ = np.linalg.norm(zP - c, axis=1), np.linalg.norm(zQ - c, axis=1)
    if gap > 0:  # a ball of probability p under P
        t = np.quantile(distP, p)
        q_mc = np.mean(distQ <= t)
    else:  # the complement of a ball
        t = np.quantile(distP, 1 - p)
        q_mc = np.mean(distQ >= t)
    wc = float(worst_case(p, sigma0, sigma1, r, d))
    assert abs(wc - q_mc) < 4 * math.sqrt(q_mc * (1 - q_mc) / 400_000) + 2e-3
    # and it is a minimum: random balls and half-spaces with P(A) >= p have Q(A) >= the worst case
    for _ in range(200):
        cc = rng.standard_normal(d) * rng.uniform(0, 1)
        tt = sigma0 * math.sqrt(stats.ncx2.ppf(p, d, float(cc @ cc) / sigma0**2))  # P(ball) = p exactly
        assert _ball_probs(cc, tt, delta, sigma1) >= wc - 1e-9
        w = rng.standard_normal(d)
        w /= np.linalg.norm(w)
        b = sigma0 * stats.norm.ppf(p)  # P(w . z <= b) = p
        assert stats.norm.cdf((b - w @ delta) / sigma1) >= wc - 1e-9


def test_worst_case_reduces_to_cohen_at_equal_scales_and_matches_the_issues_numbers():
    p, s0 = 0.99, 0.25
    for r in (0.0, 0.1, 0.3):
        cohen = stats.norm.cdf(stats.norm.ppf(p) - r / s0)
        assert float(worst_case(p, s0, s0 * (1 + 1e-4), r, 10)) == pytest.approx(cohen, abs=2e-3)
        assert float(worst_case(p, s0, s0 * (1 - 1e-4), r, 10)) == pytest.approx(cohen, abs=2e-3)
        assert float(worst_case(p, s0, s0, r, 10)) == pytest.approx(cohen, abs=1e-12)
    # d = 3,072 concentrates the chi-square: a 4% spread loses most of p_A at r = 0
    assert float(worst_case(p, s0, 0.26, 0.0, 3072)) == pytest.approx(0.2213, abs=1e-3)
    assert float(worst_case(p, s0, 0.2525, 0.0, 3072)) == pytest.approx(0.9374, abs=1e-3)


def test_scale_tv_matches_numerical_integration():
    for s, t in ((1.0, 2.0), (0.5, 0.55)):
        num = 0.5 * integrate.quad(lambda z: abs(stats.norm.pdf(z, 0, s) - stats.norm.pdf(z, 0, t)), -np.inf, np.inf)[0]
        assert float(scale_tv(s, t, 1)) == pytest.approx(num, abs=1e-7)
    num = 0.5 * integrate.quad(lambda z: abs(stats.norm.pdf(z, 0, 1) - stats.norm.pdf(z, 0.3, 1)), -np.inf, np.inf)[0]
    assert float(shift_tv(0.3, 1.0)) == pytest.approx(num, abs=1e-7)
    # in d = 50, by Monte Carlo: TV = E_P[max(0, 1 - q/p)] with the densities' ratio in closed form
    rng = np.random.default_rng(5)
    d, s, t = 50, 1.0, 1.1
    z2 = np.sum((s * rng.standard_normal((200_000, d))) ** 2, axis=1)
    log_ratio = d * np.log(s / t) - z2 / (2 * t**2) + z2 / (2 * s**2)
    mc = np.mean(np.maximum(0.0, 1 - np.exp(log_ratio)))
    assert float(scale_tv(s, t, d)) == pytest.approx(mc, abs=4e-3)


def test_varying_radius_is_cohens_at_a_point_interval_and_never_above_the_true_worst_case():
    p, s0 = 0.995, 0.25
    cohen = s0 * stats.norm.ppf(p)
    assert varying_radius(p, s0, s0, s0, 3072).radius == pytest.approx(cohen, rel=1e-12)
    near = varying_radius(p, s0, s0 * (1 - 1e-6), s0 * (1 + 1e-6), 20)
    assert near.certified and cohen * 0.93 < near.radius < cohen  # the grid's slack costs a little, never adds
    rng = np.random.default_rng(3)
    for d in (10, 200):
        for _ in range(4):
            lo, hi = sorted(s0 * np.exp(rng.uniform(-0.05, 0.05, 2)))
            res = varying_radius(p, s0, lo, hi, d)
            if not res.certified:
                assert float(worst_case(p, s0, np.linspace(lo, hi, 201), 0.0, d).min()) < 0.5 + 0.01
                continue
            # every (r, sigma') of the certified set, densely, keeps the exact worst case above 1/2
            rs, ss = np.meshgrid(np.linspace(0, res.radius, 21), np.linspace(lo, hi, 21))
            assert float(worst_case(p, s0, ss, rs, d).min()) > 0.5
            # and it is not vacuous: a little further out, some sigma' fails or the grid slack is all that is left
            out = float(worst_case(p, s0, np.linspace(lo, hi, 101), res.radius * 1.15 + 0.02, d).min())
            assert out < 0.5 + 0.02


def test_the_grid_bound_never_exceeds_the_dense_exact_minimum_over_its_cells():
    # the verified bound over [0, R] x [lo, hi] must lie below the exact worst case at every point in it,
    # including points between the grid's nodes (dropping the TV slack of the cells breaks this)
    from rsbook.core.varying import _grid_bound, _sigma_nodes

    rng = np.random.default_rng(7)
    p, s0 = 0.99, 0.25
    for d in (20, 500):
        for _ in range(3):
            lo, hi = sorted(s0 * np.exp(rng.uniform(-0.03, 0.03, 2)))
            R = float(rng.uniform(0.05, 0.4))
            nodes = _sigma_nodes(lo, hi, s0, d, 0.02)
            bound = _grid_bound(p, s0, nodes, R, d, 0.02)
            rs, ss = np.meshgrid(np.linspace(0, R, 61), np.exp(np.linspace(np.log(lo), np.log(hi), 61)))
            assert bound <= float(worst_case(p, s0, ss, rs, d).min()) + 1e-9


def test_a_wide_interval_in_high_dimension_certifies_nothing():
    wide = varying_radius(0.99, 0.25, 0.24, 0.26, 3072)
    assert not wide.certified and wide.worst <= 0.5  # the r = 0 return: its verified bound is at most 1/2
    narrow = varying_radius(0.99, 0.25, 0.2499, 0.2501, 3072)
    assert 0.2 < narrow.radius < 0.25 * stats.norm.ppf(0.99)  # below Cohen's radius at sigma_0
    capped = varying_radius(0.99, 0.25, 0.2499, 0.2501, 3072, r_max=0.1)
    assert capped.certified and capped.radius == 0.1 and capped.worst > 0.5  # the cap branch, still verified


# -- dual smoothing through the engine ----------------------------------------------------------

def _synthetic(D: float = 0.1):
    """A linear selector (true interval within D: [0.25 - 0.3 D, 0.25 + 0.3 D]) and a norm band at
    sigma' = 0.235, a level inside the interval that none of the three sigmas hits."""
    torch.manual_seed(0)
    x0 = torch.full((3, 32, 32), 0.5)
    w = torch.randn(3 * 32 * 32)
    selector = LinearSelector(x0, w, s0=0.25, k=0.3)
    classifier = NormBandClassifier(x0, 0.230, 0.240, band_class=1, other=0)
    return x0, w / w.norm(), selector, classifier


def test_the_synthetic_models_have_the_smoothed_answers_the_construction_says():
    x0, w, selector, classifier = _synthetic()
    d = x0.numel()
    band = lambda s: stats.chi2.cdf(d * (0.240 / s) ** 2, d) - stats.chi2.cdf(d * (0.230 / s) ** 2, d)  # noqa: E731
    assert band(0.235) > 0.85 and max(band(0.205), band(0.25), band(0.295)) < 1e-3
    smooth = Smooth(classifier, 2)
    xp = x0 - 0.05 * w.reshape(x0.shape)  # the selector's level there: 0.25 + 0.3 * (-0.05) = 0.235
    sigma_there = float(selector(xp[None]))
    counts = smooth.sample_counts(xp, 2000, 500, torch.Generator().manual_seed(1), noise=sigma_there)
    assert sigma_there == pytest.approx(0.235, abs=1e-4)
    assert counts[1] / 2000 == pytest.approx(band(sigma_there), abs=0.04)


def test_sound_dual_certificate_holds_and_the_three_sigma_rule_fails_on_the_norm_band():
    x0, w, selector, classifier = _synthetic(D=0.2)
    D, trials = 0.2, 40
    settings = DualSettings(sigma_m=0.25, n_h=1000, alpha_h=1e-5, n0=50, n=500, alpha=1e-3)
    images = [x0] * trials
    draws = selector_draws(selector, images, [stream("selector", t, 0, "cpu") for t in range(trials)], settings.n_h,
                           settings.sigma_m, batch_size=500)
    rows = dual_certify(Smooth(classifier, 2), images, draws, lambda i, k: stream("dual", i, 0, "cpu", k=k), settings, [D],
                        batch_size=500)
    # the point x' = x0 + t w with 0.3 t = -0.015 is smoothed at sigma' = 0.235, where the band wins:
    # any certificate of class 0 with radius >= |t| = 0.05 is false
    bad_radius = 0.015 / 0.3
    three = sum(r.three_sigma.prediction == 0 and r.three_sigma.radius >= bad_radius for r in rows) / trials
    sound = sum(r.sound.prediction == 0 and r.sound.radius >= bad_radius for r in rows) / trials
    assert all(r.interval.lower < 0.235 < r.interval.upper for r in rows)  # the bad level is inside every interval
    assert three > 0.9  # the paper's rule certifies a false radius (negative control)
    budget = settings.error
    assert sound <= budget + 3 * math.sqrt(max(budget * (1 - budget), 1e-12) / trials)
    assert all(r.no_attack.prediction == 0 for r in rows)  # at the median the vote is class 0


def test_sound_dual_certificate_certifies_a_nearly_constant_selector_and_is_right():
    # positive control: a selector that barely moves (k = 0.002: the level stays in 0.25 +- 0.0004 within D)
    # and a band at sigma' in [0.30, 0.31], far outside: class 0 holds at every level and point within D
    torch.manual_seed(0)
    x0 = torch.full((3, 32, 32), 0.5)
    selector = LinearSelector(x0, torch.randn(3 * 32 * 32), s0=0.25, k=0.002)
    classifier = NormBandClassifier(x0, 0.30, 0.31, band_class=1, other=0)
    settings = DualSettings(sigma_m=0.25, n_h=1000, alpha_h=1e-5, n0=50, n=500, alpha=1e-3)
    trials, D = 10, 0.2
    images = [x0] * trials
    draws = selector_draws(selector, images, [stream("selector", t, 0, "cpu") for t in range(trials)], settings.n_h,
                           settings.sigma_m, batch_size=500)
    rows = dual_certify(Smooth(classifier, 2), images, draws, lambda i, k: stream("dual", i, 0, "cpu", k=k), settings, [D],
                        batch_size=500)
    assert all(r.sound.prediction == 0 and 0.05 < r.sound.radius <= D for r in rows)
    assert all(r.sound.radius <= r.no_attack.radius for r in rows)  # never above Cohen's at the median


# -- the selector ---------------------------------------------------------------------------------

def test_selector_output_is_positive_and_responds_to_lambda():
    torch.manual_seed(0)
    h = NoiseSelector(3, init_sigma=0.25)
    x = torch.rand(4, 3, 32, 32)
    out = h(x, 0.25, 0.0)
    assert out.shape == (4,) and bool((out > 0).all())
    assert torch.allclose(out, torch.full((4,), 0.25), atol=1e-3)  # untrained: its initial level
    with torch.no_grad():
        h.head.weight.normal_()
    assert not torch.allclose(h(x, 0.25, 0.0), h(x, 0.25, 1.0))  # lambda is an input
    assert bool((h(x * 0 - 1e3, 0.25, 0.5) > 0).all())
    fixed = FixedInputs(h, 0.25, 0.5, clip=(0.2, 0.3))
    v = fixed(x)
    assert v.shape == (4, 1) and bool(((v >= 0.2) & (v <= 0.3)).all())


def test_universal_lambda_training_makes_the_selector_follow_lambda():
    # noise hurts this classifier (CE grows with sigma) and the KL term pulls sigma to sigma_t:
    # a selector trained with lambda ~ U(0, 1) as an input picks a smaller sigma at lambda = 0
    from torch import nn

    from rsbook.infra.data import ImageDataset
    from rsbook.methods.variational import SelectorStep
    from rsbook.training.fit import FitConfig, fit

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (128, 1, 8, 8), generator=g, dtype=torch.uint8)
    w = torch.randn(64, generator=g)
    score = (images.float().flatten(1) / 255 - 0.5) @ w
    data = ImageDataset("mnist", images, (score > 0).long())
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        classifier[1].weight.copy_(torch.stack([-w, w]) * 4)
        classifier[1].bias.copy_(torch.stack([w.sum(), -w.sum()]) * 2)  # 4 w . (x - 1/2) for class 1
    torch.manual_seed(0)
    h = NoiseSelector(1, init_sigma=0.3)
    step = SelectorStep(classifier, sigma_a=0.3, sigma_t=0.6, n_f=4, lam=None, kl="per-dimension")
    fit(h, step, FitConfig(epochs=60, batch_size=32, lr=3e-3, optimizer="adam", schedule="constant", weight_decay=0.0),
        data=data, progress=False, channels_last=False)
    x = images[:32].float() / 255
    with torch.no_grad():
        at0, at1 = h(x, 0.3, 0.0).mean().item(), h(x, 0.3, 1.0).mean().item()
    assert at1 == pytest.approx(0.6, rel=0.15)  # lambda = 1: the KL target
    assert at0 < 0.8 * at1  # lambda = 0: cross-entropy alone asks for less noise


def test_too_few_selector_draws_certify_nothing_unless_clipped():
    # n_h = 20 draws cannot bound the median within D = 1 at alpha_h = 1e-3: the interval is infinite,
    # so the sound certificate abstains; clipping bounds it and the constant classifier is certified
    from rsbook.core.certify import Smooth as _Smooth
    from tests.conftest import ThresholdClassifier

    x = torch.full((3, 4, 4), 0.5)
    selector = LinearSelector(x, torch.ones(48), s0=0.25, k=0.01)
    settings = DualSettings(sigma_m=0.25, n_h=20, alpha_h=1e-3, n0=10, n=1000, alpha=1e-3)
    assert settings.error == pytest.approx(1e-3 + 2e-3)
    draws = selector_draws(selector, [x], [torch.Generator().manual_seed(0)], settings.n_h, settings.sigma_m)
    smooth = _Smooth(ThresholdClassifier(-100.0), 2)  # always class 1: p_A = 1 at every sigma
    rows = dual_certify(smooth, [x], draws, lambda i, k: torch.Generator().manual_seed(k), settings, [1.0],
                        clips=(None, (0.245, 0.255)))
    raw, clipped = rows
    assert math.isinf(raw.interval.upper) and raw.sound.abstained
    assert raw.three_sigma.abstained  # no finite level to certify at
    assert clipped.interval.lower == 0.245 and clipped.interval.upper == 0.255
    assert clipped.no_attack.prediction == 1 and not clipped.sound.abstained
    # the sound radius at this p_A and spread is the worst case's, capped at D, never above Cohen's at the median
    assert 0 < clipped.sound.radius <= min(1.0, clipped.no_attack.radius)


def test_a_selector_is_stored_by_its_config_and_loads_back(tmp_path):
    from rsbook.infra.artifacts import ArtifactStore
    from rsbook.training.classifier import TrainConfig
    from rsbook.training.selector import SelectorConfig
    from rsbook.training.stored import trained

    base = TrainConfig(arch="cnn4", sigma=0.25, epochs=1, batch_size=32, lr=0.01, schedule="cosine", train_subset=64)
    cfg = SelectorConfig(base=base, sigma_a=0.25, sigma_t=0.5, n_h=2, n_f=2, kl="per-dimension", epochs=1, batch_size=16,
                         train_subset=32)
    store = ArtifactStore(tmp_path / "store")
    h = trained(cfg, store, progress=False)
    again = trained(cfg, store, progress=False)  # loaded, not retrained
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(h(x, 0.25, 0.3), again(x, 0.25, 0.3))
    assert store.exists(cfg, "pt") and store.exists(base, "pt")
    with pytest.raises(ValueError, match="kl must be one of"):
        SelectorConfig(base=base, sigma_a=0.25, sigma_t=0.5, kl="mean")
