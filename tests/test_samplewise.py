"""Chapter 2: sample-wise smoothing's allocation, level choice, DDRS wrapper and worked example."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from torch import nn

from rsbook.core.certify import Smooth
from rsbook.core.streams import image_generator
from rsbook.methods.samplewise import (allocate, choose_sigmas, ddrs_memory, ddrs_sigmas, memory_rule, pairwise_distances,
                                       selection_generators, soft_radius)
from rsbook.papers import samplewise as ch


def _instance(seed: int, n: int = 40, d: int = 3):
    g = np.random.default_rng(seed)
    x = g.uniform(0, 3, (n, d))
    sig = g.choice([0.25, 0.5, 1.0], n)
    r = np.where(g.random(n) < 0.1, 0.0, g.uniform(0.1, 1.5, n))  # some abstentions
    cls = g.integers(0, 3, n)
    return pairwise_distances(x), sig, r, cls


@pytest.mark.parametrize("seed", range(5))
def test_the_allocation_never_overlaps_conflicting_balls_nor_exceeds_cohen_and_beats_the_memory_rule(seed):
    dist, sig, r, cls = _instance(seed)
    for conflict, classes in (("sigma", None), ("sigma-and-class", cls)):
        lp = allocate(dist, sig, r, classes, conflict)
        rho = lp.radius
        assert (rho >= 0).all() and (rho <= r + 1e-12).all()
        bad = (sig[:, None] != sig[None, :]) & (r[:, None] > 0) & (r[None, :] > 0)  # an abstention claims nothing
        if classes is not None:
            bad &= cls[:, None] != cls[None, :]
        i, k = np.triu_indices(len(r), 1)
        sel = bad[i, k]
        assert (rho[i[sel]] + rho[k[sel]] <= dist[i[sel], k[sel]]).all()
        assert lp.pairs > 0  # the instance is dense enough to constrain
        g = np.random.default_rng(seed)
        for order in [None] + [g.permutation(len(r)) for _ in range(5)]:
            mem = memory_rule(dist, sig, r, classes, conflict, order=order)
            assert (mem.radius[i[sel]] + mem.radius[k[sel]] <= dist[i[sel], k[sel]] + 1e-12).all()
            assert rho.sum() >= mem.radius.sum() - 1e-9
    # the weaker condition never gives less
    assert allocate(dist, sig, r, cls, "sigma-and-class").radius.sum() >= allocate(dist, sig, r).radius.sum() - 1e-9


def test_allocation_and_memory_rule_on_two_and_three_points_in_closed_form():
    # two points at distance 1 with radii 0.8 and 0.6 and different levels: the LP keeps a total of 1
    dist = np.array([[0, 1.0], [1.0, 0]])
    lp = allocate(dist, np.array([0.25, 0.5]), np.array([0.8, 0.6]))
    assert lp.radius.sum() == pytest.approx(1.0, abs=1e-9) and lp.pairs == 1 and lp.binding.any()
    assert lp.lost == pytest.approx(0.4, abs=1e-9)
    mem = memory_rule(dist, np.array([0.25, 0.5]), np.array([0.8, 0.6]))
    assert mem.radius == pytest.approx([0.8, 0.2])  # the first point keeps its radius, the second takes the rest
    assert memory_rule(dist, np.array([0.25, 0.5]), np.array([0.8, 0.6]), order=[1, 0]).radius == pytest.approx([0.4, 0.6])
    # the same level: no constraint
    assert allocate(dist, np.array([0.5, 0.5]), np.array([0.8, 0.6])).radius == pytest.approx([0.8, 0.6])
    # a chain a - b - c at unit spacing, radii 1 each, levels alternating: the optimum is 2 (a and c full, b empty)
    d3 = np.abs(np.subtract.outer([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]))
    chain = allocate(d3, np.array([0.25, 0.5, 0.25]), np.ones(3))
    assert chain.radius.sum() == pytest.approx(2.0, abs=1e-9) and chain.radius[1] == pytest.approx(0.0, abs=1e-9)
    # memory in order a, b, c gets a = 1, b = 0, c = 1 too; in order b, a, c it gets 1 only
    assert memory_rule(d3, np.array([0.25, 0.5, 0.25]), np.ones(3), order=[1, 0, 2]).radius.sum() == pytest.approx(1.0)
    # same level but different classes do not conflict under "sigma-and-class" only when classes agree
    both = allocate(dist, np.array([0.25, 0.5]), np.array([0.8, 0.6]), np.array([3, 3]), "sigma-and-class")
    assert both.radius == pytest.approx([0.8, 0.6]) and both.pairs == 0


def test_ddrs_memory_step_as_published():
    # stored point 0 (class 0, radius 1); point 1 at distance 0.5 (class 1, radius 0.8) lies inside its ball
    dist = np.array([[0, 0.5, 3.0], [0.5, 0, 2.0], [3.0, 2.0, 0]])
    cls, rad = ddrs_memory(dist, np.array([0, 1, 1]), np.array([1.0, 0.8, 1.7]))
    assert cls.tolist() == [0, 0, 1]  # point 1 takes the stored class
    assert rad[1] == pytest.approx(0.5)  # |0.5 - 1|
    # point 2 (class 1) overlaps point 0 (class 0; 1 + 1.7 < 3? no: 2.7 < 3, no overlap) and point 1 (now class 0, 0.5 + 1.7 > 2)
    assert rad[2] == pytest.approx(2.0 - 0.5)
    assert rad[0] == 1.0


def test_soft_radius_is_macers_formula():
    p = np.array([0.7, 0.2, 0.1])
    assert soft_radius(p, 0.5) == pytest.approx(0.25 * (norm.ppf(0.7) - norm.ppf(0.2)))
    assert soft_radius(p, 0.5, label=1) == 0.0
    assert soft_radius(p, 0.5, label=0) == pytest.approx(soft_radius(p, 0.5))
    assert soft_radius(np.array([1.0, 0.0]), 1.0) == pytest.approx(0.5 * (norm.ppf(0.98) - norm.ppf(0.02)))  # clamped


class _Constant(nn.Module):
    """Logits that do not depend on the input: the soft radius is proportional to sigma."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("w", torch.tensor(logits, dtype=torch.float32))

    def forward(self, z):
        return self.w.expand(z.shape[0], -1) + 0 * z.reshape(z.shape[0], -1)[:, :1]


def test_choose_sigmas_picks_the_level_of_largest_soft_radius():
    model = _Constant([2.0, 0.0, -1.0])
    x = [torch.zeros(1, 4, 4) for _ in range(3)]
    grid = (0.12, 0.25, 0.5)
    gens = [[torch.Generator().manual_seed(10 * i + j) for j in range(3)] for i in range(3)]
    picks = choose_sigmas(model, x, grid, 4, gens)
    p = torch.softmax(torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64), 0).numpy()
    for c in picks:
        assert c.sigma == 0.5 and c.soft == pytest.approx([soft_radius(p, s) for s in grid])
    wrong = choose_sigmas(model, x, grid, 4, gens, labels=[1, 1, 0])
    assert [c.sigma for c in wrong] == [0.12, 0.12, 0.5]  # wrong everywhere: the smallest level


class _Recorder(nn.Module):
    """Records the inputs it sees (at x = 0 they are the noise draws) and votes class 0."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, z):
        self.seen.append(z.detach().reshape(z.shape[0], -1).clone())
        out = torch.zeros(z.shape[0], 2)
        out[:, 0] = 1.0
        return out


def test_the_test_time_choice_draws_noise_disjoint_from_the_certificates():
    rec, idx, grid = _Recorder(), 40, (0.25, 0.5)
    x = torch.zeros(1, 4, 4)
    choose_sigmas(rec, [x], grid, 8, selection_generators(0, [idx], len(grid), "cpu"))
    selection = torch.cat(rec.seen)
    unit_sel = torch.cat([selection[:8] / 0.25, selection[8:] / 0.5])
    rec.seen.clear()
    Smooth(rec, 2, 0.25, channels_last=False).certify(x, 10, 50, 0.001, 64, generator=image_generator(0, idx, "cpu"))
    unit_cert = torch.cat(rec.seen) / 0.25
    gap = torch.cdist(unit_sel, unit_cert).min()
    assert gap > 1e-3, "a selection draw reappears among the certificate's draws"
    # the check can fail: the certify stream itself reproduces its draws
    rec.seen.clear()
    Smooth(rec, 2, 0.25, channels_last=False).certify(x, 10, 50, 0.001, 64, generator=image_generator(0, idx, "cpu"))
    assert torch.cdist(torch.cat(rec.seen) / 0.25, unit_cert).min() < 1e-6


def test_ddrs_wrapper_follows_the_gradient_of_the_soft_radius_in_closed_form():
    logits = [1.0, 0.0]
    model = _Constant(logits)
    for p in model.parameters():
        p.requires_grad_(True)
    state = torch.random.get_rng_state()
    x = torch.zeros(3, 1, 4, 4)
    sig = ddrs_sigmas(model, x, 0.25, lr=0.01, iterations=5, samples=4, seed=0)
    p = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0).numpy()
    gap = norm.ppf(p[0]) - norm.ppf(p[1])  # d/dsigma of sigma/2 * gap
    assert sig == pytest.approx(0.25 + 5 * 0.01 * gap / 2, rel=1e-5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched


def test_the_worked_example_refutes_the_naive_certificate_and_not_the_sound_ones():
    ex = ch.worked_example()
    w, t = ex.attrs["w"], ex.attrs["distance"]
    p1 = lambda x1, s: norm.cdf((w - x1) / s) - norm.cdf((-w - x1) / s)  # noqa: E731 -- exact smoothing of the slab
    x0, xp = ex.iloc[0], ex.iloc[1]
    assert x0["sigma (rule)"] != xp["sigma (rule)"]
    assert (p1(0.0, x0["sigma (rule)"]) > 0.5) and (p1(t, xp["sigma (rule)"]) < 0.5)  # classes 1 and 0, exactly
    assert t < x0["sigma (rule)"] * norm.ppf(p1(0.0, x0["sigma (rule)"]))  # x' lies inside the naive radius of x_0
    assert x0["transductive radius"] <= t and x0["inductive radius"] <= t
    assert x0["transductive radius"] + xp["transductive radius"] <= t + 1e-12


def test_stored_inductive_radii_are_the_varying_radius_of_each_image_and_refuse_another_log(tmp_path, monkeypatch):
    from rsbook.core.varying import varying_radius

    monkeypatch.setenv("RSBOOK_TMP", str(tmp_path))  # the smoke store goes here
    cfg = dataclasses.replace(ch.inductive_config("mnist", "smoke"), lo=0.2495, hi=0.2505)  # a narrow band: some certify
    log = pd.DataFrame({"idx": [40, 0, 20], "predict": [3, -1, 7], "radius": [0.5, 0.0, 0.01], "sigma": [0.25, 0.25, 0.25]})
    radii = ch.stored_inductive(cfg, log, "smoke")  # in image order: 0 (abstained), 20, 40
    assert np.isnan(radii[0])
    for r, rad in zip(radii[1:], (0.01, 0.5)):
        res = varying_radius(float(norm.cdf(rad / 0.25)), 0.25, cfg.lo, cfg.hi, 784, r_max=cfg.r_max)
        assert (r == res.radius) if res.certified else np.isnan(r)
    assert np.isfinite(radii[2]) and 0 < radii[2] < 0.5  # certified, below Cohen's radius at a fixed level
    np.testing.assert_array_equal(ch.stored_inductive(cfg, log, "smoke"), radii)  # loaded back as computed
    with pytest.raises(ValueError, match="other images than this log's"):
        ch.stored_inductive(cfg, log.iloc[:2], "smoke")
