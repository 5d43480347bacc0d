"""Anytime-valid sequential certification: the confidence sequence, soundness against a known
p_A (with a negative control that must fail), power against fixed N, and resume."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import betabinom, binom, norm

from rsbook.core.bounds import clopper_pearson_lower
from rsbook.core.certify import ABSTAIN, Smooth
from rsbook.core.engine import Item
from rsbook.core.noise import Gaussian, Laplace, Uniform
from rsbook.runs.runner import LOG_COLUMNS, certify_dataset, read_log
from rsbook.core.sequential import BetaBinomialCS, Sequential, checkpoints, naive_stop, required_successes

from conftest import CountingClassifier, ThresholdClassifier
from test_runner import _dataset


def test_wealth_is_the_beta_binomial_bayes_factor():
    # W_n(p) = P_betabinom(S) / P_binom(S; p): the binomial coefficients cancel (scipy's pmfs).
    cs = BetaBinomialCS(0.01, 2.0, 0.3)
    for s, n, p in [(0, 10, 0.3), (7, 10, 0.5), (95, 100, 0.9), (1000, 1000, 0.999)]:
        want = betabinom.logpmf(s, n, 2.0, 0.3) - binom.logpmf(s, n, p)
        assert cs.log_wealth(s, n, p) == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_lower_bound_in_closed_form_when_every_sample_agrees():
    # Uniform prior, S = n: W_n(p) = 1 / ((n + 1) p^n), so L_n = (alpha / (n + 1)) ** (1 / n).
    cs = BetaBinomialCS(0.001)
    for n in (1, 10, 1000, 100_000):
        assert cs.lower(n, n) == pytest.approx((0.001 / (n + 1)) ** (1 / n), rel=1e-9)
        assert cs.lower(n, n) <= (0.001 / (n + 1)) ** (1 / n)  # rounded down, never up
    assert cs.upper(0, 50) == pytest.approx(1 - (0.001 / 51) ** (1 / 50), rel=1e-9)


def test_the_sequence_is_wider_than_one_clopper_pearson_interval_but_not_by_much():
    # An anytime bound pays for peeking: it must lie below the fixed-n exact bound, and the
    # Beta(1, 0.1) prior keeps the price small where every sample agrees.
    cs = BetaBinomialCS(0.001, 1.0, 0.1)
    for s, n in [(60, 100), (990, 1000), (10_000, 10_000), (99_900, 100_000)]:
        assert cs.lower(s, n) < clopper_pearson_lower(s, n, 0.001)
    assert 1 - cs.lower(10_000, 10_000) < 1.2 * (1 - clopper_pearson_lower(10_000, 10_000, 0.001))


def test_noise_thresholds_invert_the_radii():
    for noise in (Gaussian(0.5), Laplace(0.5), Uniform(0.5)):
        p = np.array([0.55, 0.8, 0.99])
        assert np.allclose(noise.required_p(noise.certified_radius(p)), p)


def _streams(p: float, runs: int, marks: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Successes of ``runs`` Bernoulli(p) streams at each checkpoint: (runs, len(marks))."""
    rng = np.random.default_rng(seed)
    steps = np.diff(np.concatenate([[0], marks]))
    return np.cumsum(rng.binomial(steps, p, size=(runs, len(marks))), axis=1), marks


@pytest.mark.parametrize("p", [0.5, norm.cdf(1.0), norm.cdf(3.0)])
def test_the_sequence_covers_the_true_mean_at_every_time_at_once(p):
    # The whole claim: P(exists n: L_n > p) <= alpha. 10,000 runs read at 77 checkpoints to 100,000.
    alpha, runs = 0.05, 10_000
    s, n = _streams(p, runs, checkpoints(64, 1.1, 100_000), seed=int(p * 1e6))
    cs = BetaBinomialCS(alpha, 1.0, 0.1)
    ever = (cs.lower(s, n[None, :], iters=32) > p).any(axis=1)
    assert ever.mean() <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def _smooth(sigma: float, model=None) -> Smooth:
    return Smooth(model or ThresholdClassifier(0.0), 2, Gaussian(sigma), channels_last=False, compile=False)


def _threshold_items(p: float, sigma: float, runs: int, seed: int = 0):
    # ThresholdClassifier: class 1 iff x_0 > 0, so P(class 1) = Phi(x_0 / sigma) = p exactly.
    x = torch.full((1, 1, 1), sigma * norm.ppf(p), dtype=torch.float32)
    return [Item(i, x, torch.Generator().manual_seed(seed * 1_000_003 + i)) for i in range(runs)]


def test_certificates_at_the_boundary_are_wrong_at_most_alpha_of_the_time():
    # The hard case: p_A exactly at the threshold of radius 1 (true robust radius 1.0), so
    # "certified at 1" is always false. Through the engine and the whole procedure.
    alpha, runs, sigma = 0.1, 1000, 1.0
    smooth = _smooth(sigma)
    seq = Sequential(radii=(0.5, 1.0), first=32, growth=1.2)
    out = list(smooth.certify_sequential_many(_threshold_items(norm.cdf(1.0), sigma, runs), 10, 2000, alpha, 8192, seq, window=1000))
    wrong = np.array([c.certified[2] for c in out])
    assert wrong.mean() <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert np.mean([c.certified[1] for c in out]) > 0.9  # while radius 0.5 (true) is certified


def test_negative_control_stopping_when_a_fixed_n_bound_clears_is_not_sound():
    # The naive rule reads the Clopper-Pearson bound of the current n after every checkpoint and
    # stops at the first clearance: at the same boundary it is wrong far more often than alpha.
    alpha, runs, p = 0.05, 1000, norm.cdf(1.0)
    rng = np.random.default_rng(1)
    marks = checkpoints(64, 1.1, 10_000)
    wrong = np.mean([naive_stop(lambda k: rng.binomial(k, p), 10_000, alpha, p, marks) for _ in range(runs)])
    assert wrong > alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    s, n = _streams(p, 2000, marks, seed=2)  # the sequence, on the same kind of streams, is not
    assert (BetaBinomialCS(alpha, 1.0, 0.1).lower(s, n[None, :], iters=40) > p).any(axis=1).mean() <= alpha + 0.015


@pytest.mark.parametrize("p, expect", [(0.99, (1, 1, 1, 1, 0)), (0.6, (1, 0, 0, 0, 0))])
def test_power_against_fixed_n(p, expect):
    # Radii 0, .5, 1, 2, 3 at sigma = 1: thresholds .5, .69, .84, .977, .9987. With n_max = 100,000
    # fixed-N CERTIFY decides the same, at 100,000 samples per input; the sequential run needs
    # a few hundred to a few thousand.
    sigma, runs, n_max = 1.0, 40, 100_000
    smooth = _smooth(sigma)
    seq = Sequential(radii=(0.5, 1.0, 2.0, 3.0))
    out = list(smooth.certify_sequential_many(_threshold_items(p, sigma, runs, seed=5), 100, n_max, 0.001, 8192, seq))
    decisions = np.array([c.certified for c in out])
    assert (decisions == np.array(expect, bool)).mean() >= 0.97
    samples = np.mean([c.samples for c in out])
    assert samples < n_max / 20
    fixed = [smooth.certify(it.x, 100, n_max, 0.001, 8192, generator=torch.Generator().manual_seed(9)) for it in
             _threshold_items(p, sigma, 2)]
    for pred, radius in fixed:  # the fixed-N answer at the same radii
        assert tuple(int(radius >= r) for r in seq.radii) == expect and pred == 1


def test_a_radius_above_the_cap_is_decided_before_sampling():
    # With n_max = 1000 no radius beyond sigma * Phi^-1(L(1000, 1000)) (about 2.4 sigma) can be
    # certified: the run stops once radius 0 is certified, instead of sampling to n_max.
    cs = BetaBinomialCS(0.001, 1.0, 0.1)
    assert required_successes(cs, 1000, norm.cdf(3.0)) is None
    smooth = _smooth(1.0, ThresholdClassifier(-100.0))  # always class 1
    c = smooth.certify_sequential(torch.zeros(1, 1, 1), 10, 1000, 0.001, 1000, Sequential(radii=(3.0,)))
    assert c.certified == (True, False) and c.prediction == 1 and c.estimation <= 64 and c.samples == c.estimation + 10
    # ... and the needed count is where the bound first clears the threshold
    need = required_successes(cs, 1000, 0.9)
    assert cs.lower(need, 1000) > 0.9 >= cs.lower(need - 1, 1000)


def test_a_given_class_below_one_half_abstains_quickly():
    # Deterministic certification of class 1 with P(class 1) = Phi(-1) = 0.16: abstain, early.
    items = _threshold_items(norm.cdf(-1.0), 1.0, 5)
    out = list(_smooth(1.0).certify_sequential_many([Item(i.key, i.x, i.generator, c_a=1) for i in items], 100, 100_000, 0.001, 4096))
    for c in out:
        assert c.prediction == ABSTAIN and c.radius == 0.0 and c.samples < 1_000 and not any(c.certified)


def test_estimate_mode_brackets_the_true_radius():
    # p = Phi(1.5): true radius 1.5 sigma. Stop once the radius is known to 0.1; the reported
    # radius is a lower bound within about 0.1 of the truth.
    sigma = 0.5
    smooth = _smooth(sigma)
    seq = Sequential(radii=(), precision=0.1)
    out = list(smooth.certify_sequential_many(_threshold_items(norm.cdf(1.5), sigma, 30, seed=7), 100, 1_000_000, 0.001, 8192, seq))
    radii = np.array([c.radius for c in out])
    assert (radii <= 0.75).all() and (radii > 0.75 - 0.15).mean() >= 0.9
    assert max(c.samples for c in out) < 1_000_000


def test_bad_settings_are_refused_with_the_cause():
    with pytest.raises(ValueError, match="futility"):
        Sequential(futility=0.0)
    with pytest.raises(ValueError, match="precision"):
        Sequential(precision=-1.0)
    with pytest.raises(ValueError, match="growth"):
        Sequential(growth=1.0)
    with pytest.raises(ValueError, match="n_max"):
        Smooth(ThresholdClassifier(0.0), 2, 0.5).certify_sequential(torch.zeros(1, 1, 1), 10, 0, 0.001, 10)


def test_sequential_log_resumes_after_a_kill_with_identical_rows(tmp_path):
    ds = _dataset()
    seq = Sequential(radii=(0.1, 0.3), first=16, growth=1.5)

    def smooth(fail_after=None):
        return Smooth(CountingClassifier(ThresholdClassifier(0.5), fail_after=fail_after), 2, 0.3, channels_last=False, compile=False)

    full = certify_dataset(smooth(), ds, 20, 2000, 0.01, 64, tmp_path / "full.tsv", seed=3, progress=False, sequential=seq)
    header = (tmp_path / "full.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == (*LOG_COLUMNS, "samples", "lower", "cert_0", "cert_0.1", "cert_0.3")
    with pytest.raises(KeyboardInterrupt):
        certify_dataset(smooth(fail_after=12), ds, 20, 2000, 0.01, 64, tmp_path / "part.tsv", seed=3, progress=False,
                        sequential=seq)
    done = len(read_log(tmp_path / "part.tsv"))
    assert done < len(ds)
    resumed = certify_dataset(smooth(), ds, 20, 2000, 0.01, 64, tmp_path / "part.tsv", seed=3, progress=False, sequential=seq)
    cols = [c for c in full.columns if c != "time"]
    pd.testing.assert_frame_equal(resumed[cols], full[cols])
    # the decisions agree with the reported bound, and the samples include the selection
    for _, row in full.iterrows():
        assert row["samples"] > 20
        for r in (0.1, 0.3):
            assert row[f"cert_{r:g}"] == int(row["predict"] != ABSTAIN and row["lower"] > norm.cdf(r / 0.3))
    with pytest.raises(ValueError, match="header"):  # a plain log is not resumed as a sequential one
        certify_dataset(smooth(), ds, 20, 200, 0.01, 64, tmp_path / "full.tsv", seed=3, progress=False)


def test_agreement_with_fixed_n_accounts_for_the_number_of_test_images():
    from scipy.stats import beta

    from rsbook.papers.appendix_sequential import agreement_check

    def log(correct, radius, idx):
        return pd.DataFrame({"idx": idx, "correct": correct, "radius": radius})

    n = 50
    idx = np.arange(n) * 200
    ref = log(np.ones(n, int), np.full(n, 0.6), idx)
    seq = ref.copy()
    seq.loc[3, "radius"] = 0.4  # one image certified at 0.5 by fixed N only: a gap of 1/50 = 0.02 at r = 0.5
    gap, check = agreement_check(seq.iloc[::-1], ref, (0.0, 0.5), 0.02)  # row order does not matter: paired by idx
    assert gap == pytest.approx(0.02)
    # 1 of 50 decided differently: the two-sided 95% Clopper-Pearson upper end is Beta(0.975; 2, 49) > 0.02, so undecided
    assert check.outcome is None and f"{beta.ppf(0.975, 2, 49):.3f}" in check.test
    # 0 of 200 decided differently: upper end 1 - 0.025^(1/200) = 0.0183 <= 0.02, so it holds
    big = log(np.ones(200, int), np.full(200, 0.6), np.arange(200))
    assert 1 - 0.025 ** (1 / 200) < 0.02 and agreement_check(big, big, (0.0, 0.5), 0.02)[1].outcome is True
    # 40 of 200 images certified at 0.5 by fixed N only: a gap of 0.2, and the sign test (40 vs 0) finds it
    worse = big.copy()
    worse.loc[:39, "radius"] = 0.4
    gap, check = agreement_check(worse, big, (0.0, 0.5), 0.02)
    assert gap == pytest.approx(0.2) and check.outcome is False


def test_a2_claims_from_known_logs():
    from rsbook.bench.certify import BenchConfig
    from rsbook.papers import appendix_sequential as a2

    def log(radius, samples, k):
        return pd.DataFrame({"idx": np.arange(k) * 200, "correct": 1, "radius": radius, "samples": samples})

    # cpu: n0 = 100, n_max = 100,000; the sequential runs used 1,000 (sigma 0.25) and 20,020 (sigma 0.5) passes per image
    logs = {0.25: {"sequential": log(0.8, 1000, 50), "reference": log(0.8, 100_100, 50)},
            0.5: {"sequential": log(1.6, 20_020, 50), "reference": log(1.6, 100_100, 50)}}
    assert a2.pass_ratios(logs, 100, 100_000) == {0.25: pytest.approx(100.1), 0.5: pytest.approx(5.0)}
    agree = a2.agreements(logs, (0.0, 0.5, 1.0))
    assert [g for g, _ in agree.values()] == [0.0, 0.0]
    assert [c.outcome for _, c in agree.values()] == [None, None]  # 0 of 50 differ: the upper end 0.071 is above 0.02
    sound = pd.DataFrame({"sequential: error": [0.01, 0.07], "naive CP looks: error": [0.2, 0.03], "alpha": [0.05, 0.05],
                          "slack (3 s.e.)": [0.0146, 0.0146]})
    bench = {"meta": {"contention": {"contended": True, "reasons": ["busy"]}, "forward_pass_ratio": 5.0, "wall_ratio": 0.8,
                      "device": "cpu: Test CPU", "date": "2026-01-01"}}
    rows = a2.claims("cpu", logs, sound, bench, BenchConfig(n=10_000, images=10), 50).rows
    assert [r.verdict for r in rows] == ["partly", "partly", "partly", "partly", "not reproduced", "not reproduced", "reproduced",
                                         "inconclusive"]
    assert rows[0].ours == "100.1x (sigma = 0.25), 5.0x (sigma = 0.5)"  # 5.0 < 10: the second check fails
    assert "50 images bound the share at 0.071, and it takes 183 such images" in rows[1].reason
    assert rows[7].test.startswith("fixed N's wall time") and "busy machine (busy)" in rows[7].test
    assert a2.setting_note("cpu", 500, 50).startswith("**Setting.** Chapter 0's cnn4 models, 500 test images (sequential, fixed "
                                                      "N = 1,000), 50 (fixed N = 100,000)")


# -- the betting confidence sequence ------------------------------------------------------------------


def test_betting_wealth_is_the_product_of_the_bets_payoffs():
    # Against a per-draw product computed here: chunks of draws, each chunk at the bet its past fixed.
    from rsbook.core.sequential import BettingCS

    rng = np.random.default_rng(3)
    cs = BettingCS(0.01, (0.5, 0.8, 0.95), hedge=0.9, a=0.5, b=0.5)
    x = rng.random(300) < 0.9
    chunks = np.split(x, [64, 130, 220])
    log_w, s, n = np.zeros((1, 3)), 0, 0
    by_hand = np.zeros(3)
    for c in chunks:
        lam = cs.bets([s], [n])
        for j, p in enumerate(cs.grid):
            q = (s + 0.5) / (n + 1.0)
            bet = min(max((q - p) / (p * (1 - p)), 0.0), 0.9 / p)
            assert lam[0, j] == pytest.approx(bet)
            by_hand[j] += sum(math.log(1 + bet * (float(v) - p)) for v in c)
        log_w = cs.log_wealth(log_w, lam, [int(c.sum())], [len(c)])
        s, n = s + int(c.sum()), n + len(c)
    assert log_w[0] == pytest.approx(by_hand, rel=1e-10)
    assert cs.lower(np.array([[True, True, False]]))[0] == 0.8 and cs.lower(np.array([[False, True, True]]))[0] == 0.0


@pytest.mark.parametrize("p", [0.5, norm.cdf(1.0), 0.99])
def test_the_betting_sequence_covers_the_true_mean_at_every_time_at_once(p):
    # P(exists n: L_n >= p) <= alpha, with p itself on the grid (the hardest place): 4,000 runs to 20,000.
    from rsbook.core.sequential import BettingCS, betting_grid

    alpha, runs = 0.05, 4000
    marks = checkpoints(64, 1.1, 20_000)
    rng = np.random.default_rng(int(p * 1e5))
    cs = BettingCS(alpha, betting_grid([p], 20_000))
    log_w, rejected = np.zeros((runs, len(cs.grid))), np.zeros((runs, len(cs.grid)), bool)
    s, n, ever = np.zeros(runs), 0, np.zeros(runs, bool)
    for m in marks:
        k = int(m) - n
        hits = rng.binomial(k, p, runs)
        log_w = cs.log_wealth(log_w, cs.bets(s, np.full(runs, n)), hits, np.full(runs, k))
        rejected |= log_w >= cs.threshold
        ever |= cs.lower(rejected) >= p
        s, n = s + hits, int(m)
    assert ever.mean() <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert not ever.all()


def test_betting_certificates_at_the_boundary_are_wrong_at_most_alpha_of_the_time():
    alpha, runs, sigma = 0.1, 1000, 1.0
    smooth = _smooth(sigma)
    seq = Sequential(radii=(0.5, 1.0), first=32, growth=1.2, sequence="betting")
    out = list(smooth.certify_sequential_many(_threshold_items(norm.cdf(1.0), sigma, runs), 10, 2000, alpha, 8192, seq, window=1000))
    assert np.mean([c.certified[2] for c in out]) <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert np.mean([c.certified[1] for c in out]) > 0.9  # the true radius 0.5 is certified


def test_betting_decides_like_fixed_n_with_far_fewer_samples():
    sigma, n_max = 1.0, 100_000
    smooth = _smooth(sigma)
    seq = Sequential(radii=(0.5, 1.0, 2.0, 3.0), sequence="betting")
    out = list(smooth.certify_sequential_many(_threshold_items(0.99, sigma, 40, seed=5), 100, n_max, 0.001, 8192, seq))
    assert (np.array([c.certified for c in out]) == np.array((1, 1, 1, 1, 0), bool)).mean() >= 0.97
    assert np.mean([c.samples for c in out]) < n_max / 20
    # a radius above the cap is given up before sampling (rule a: even all successes could not reach 1/alpha)
    c = _smooth(1.0, ThresholdClassifier(-100.0)).certify_sequential(torch.zeros(1, 1, 1), 10, 1000, 0.001, 1000,
                                                                   Sequential(radii=(3.0,), sequence="betting"))
    assert c.certified == (True, False) and c.estimation <= 200


def test_betting_is_refused_for_estimation_and_unknown_sequences_name_the_choices():
    with pytest.raises(ValueError, match="decides at radii only"):
        Sequential(precision=0.05, sequence="betting")
    with pytest.raises(ValueError, match="beta-binomial"):
        Sequential(sequence="kelly")


def test_adding_the_sequence_field_keeps_every_stored_key():
    from rsbook.infra.artifacts import config_key
    from rsbook.runs.runner import CertifyConfig

    cfg = CertifyConfig(model=None, sequential=Sequential(radii=(0.0, 0.5)))  # a key computed before the field existed
    assert config_key(cfg) == config_key(dataclasses.replace(cfg, sequential=Sequential(radii=(0.0, 0.5), sequence="beta-binomial")))
    assert config_key(cfg) != config_key(dataclasses.replace(cfg, sequential=Sequential(radii=(0.0, 0.5), sequence="betting")))
