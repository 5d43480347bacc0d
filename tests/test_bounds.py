"""Clopper-Pearson bounds against scipy's own exact interval and against their definition."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom, binomtest

from rsbook.core.bounds import clopper_pearson_lower, clopper_pearson_upper


@pytest.mark.parametrize("n", [1, 10, 100, 1000, 100_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_lower_and_upper_match_scipys_exact_interval(n, alpha):
    # scipy's two-sided exact (Clopper-Pearson) interval at level 1 - 2 alpha has the one-sided
    # (1 - alpha) bounds as its ends.
    for n_a in np.unique(np.linspace(0, n, 13).astype(int)):
        ci = binomtest(int(n_a), n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
        assert clopper_pearson_lower(n_a, n, alpha) == pytest.approx(ci.low, rel=1e-9, abs=1e-300)
        assert clopper_pearson_upper(n_a, n, alpha) == pytest.approx(ci.high, rel=1e-9)


def test_lower_is_the_definition_solved_numerically():
    # Definition: the p at which P(Binom(n, p) >= n_a) = alpha, found here by root finding on
    # scipy's binomial tail, not by the beta quantile the code uses.
    n, alpha = 200, 0.01
    for n_a in [1, 50, 120, 199, 200]:
        root = brentq(lambda p: binom.sf(n_a - 1, n, p) - alpha, 1e-12, 1 - 1e-12, xtol=1e-14)
        assert clopper_pearson_lower(n_a, n, alpha) == pytest.approx(root, rel=1e-7)


@pytest.mark.parametrize("n", [1, 7, 1000, 10_000, 100_000])
def test_all_successes_closed_form(n):
    # P(Binom(n, p) >= n) = p^n = alpha  =>  p = alpha^(1/n)
    assert clopper_pearson_lower(n, n, 0.001) == pytest.approx(0.001 ** (1 / n), rel=1e-10)


def test_zero_successes_is_zero_and_upper_is_one():
    assert clopper_pearson_lower(0, 50, 0.01) == 0.0
    assert clopper_pearson_upper(50, 50, 0.01) == 1.0
    assert clopper_pearson_upper(0, 50, 0.01) == pytest.approx(1 - 0.01 ** (1 / 50))


def test_coverage_by_simulation():
    # P(p_lower > p) <= alpha for a fixed p: check with 20,000 binomial draws (exact, no model).
    rng = np.random.default_rng(0)
    n, p, alpha = 100, 0.7, 0.05
    lows = clopper_pearson_lower(rng.binomial(n, p, size=20_000), n, alpha)
    violations = np.mean(lows > p)
    assert violations <= alpha + 4 * math.sqrt(alpha * (1 - alpha) / 20_000)
    assert violations > 0.01  # exact CP is conservative but not vacuous here


@pytest.mark.parametrize("args", [(-1, 10, 0.1), (11, 10, 0.1), (5, 0, 0.1), (5, 10, 0.0), (5, 10, 1.0)])
def test_invalid_arguments_raise(args):
    with pytest.raises(ValueError):
        clopper_pearson_lower(*args)
