"""The method modules, each against a closed form, scipy or torch's own distributions."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from rsbook.core.engine import Engine, Item
from rsbook.core.noise import Gaussian, Laplace
from rsbook.infra.data import ImageDataset
from rsbook.methods.attacks import L2PGD, l2_pgd
from rsbook.methods.denoise import Denoised, DenoiserMSE, DenoisingScoreMatching, TweedieDenoiser, dsm_loss, geometric_sigmas, tweedie
from rsbook.methods.heat import HeatSmoothing, jacobian_norm_estimate
from rsbook.methods.median import median_bounds, order_indices
from rsbook.methods.smoothadv import SmoothAdv
from rsbook.methods.soft import SoftSmoothed
from rsbook.methods.variational import SelectorStep, gaussian_kl
from rsbook.methods.step import Batch
from rsbook.training.fit import FitConfig, fit


class Threshold(nn.Module):
    """Logits (-k z, k z) with z = x_0: a (nearly) hard threshold at 0 on the first coordinate."""

    def __init__(self, k: float = 1e4):
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = x.flatten(1)[:, 0] * self.k
        return torch.stack([-z, z], 1)


# -- soft smoothed classifier -------------------------------------------------------------------

def test_soft_smoothed_classifier_is_the_smoothed_probability_and_differentiable_in_sigma():
    soft = SoftSmoothed(Threshold(), Gaussian(0.5), m=40_000)
    soft.generator = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 1, 2, 2)
    x[1, 0, 0, 0] = 0.3
    sigma = torch.tensor([0.5, 0.5], requires_grad=True)
    p = soft(x, sigma)
    expected = stats.norm.cdf(np.array([0.0, 0.3]) / 0.5)  # P(x_0 + eps > 0)
    np.testing.assert_allclose(p[:, 1].detach().numpy(), expected, atol=4 * 0.5 / math.sqrt(40_000))
    # d/dsigma P(x0 + sigma z > 0) = -x0 phi(x0/sigma) / sigma^2 < 0 for x0 > 0: the surrogate of a
    # hard threshold has no useful gradient, so check a smooth model instead
    smooth = SoftSmoothed(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), Gaussian(0.5), m=8)
    s2 = torch.tensor([0.4, 0.7], requires_grad=True)
    smooth(x, s2)[:, 1].sum().backward()
    assert s2.grad is not None and torch.all(s2.grad != 0)


# -- median smoothing ---------------------------------------------------------------------------

def test_order_indices_follow_their_binomial_definition():
    n, D, sigma, alpha = 500, 0.25, 0.5, 0.01
    q_l, q_u = order_indices(n, D, Gaussian(sigma), alpha)
    p_u, p_l = stats.norm.cdf(D / sigma), stats.norm.cdf(-D / sigma)
    assert stats.binom.cdf(q_u - 1, n, p_u) >= 1 - alpha > stats.binom.cdf(q_u - 2, n, p_u)  # smallest such q
    assert stats.binom.cdf(q_l - 1, n, p_l) <= alpha < stats.binom.cdf(q_l, n, p_l)  # largest such q
    assert q_l < n / 2 < q_u
    assert order_indices(10, 2.0, Gaussian(0.5), 0.001) == (None, None)  # too few draws: no finite bound


def test_median_bounds_cover_the_shifted_median_at_the_stated_rate():
    # h(x + eps) = x_0 + eps_0 with eps ~ N(0, sigma^2): within ||delta|| <= D the smoothed median is
    # x_0 + delta_0, in [x_0 - D, x_0 + D]; each bound may miss with probability <= alpha.
    rng = np.random.default_rng(0)
    n, D, sigma, alpha, trials = 300, 0.2, 0.5, 0.05, 2000
    misses_u = misses_l = 0
    for _ in range(trials):
        b = median_bounds(0.1 + sigma * rng.standard_normal(n), D, Gaussian(sigma), alpha)
        misses_u += b.upper < 0.1 + D
        misses_l += b.lower > 0.1 - D
    slack = 4 * math.sqrt(alpha * (1 - alpha) / trials)
    assert misses_u / trials <= alpha + slack and misses_l / trials <= alpha + slack
    assert misses_u > 0  # not vacuous: the bound is close to the true percentile
    assert math.isinf(median_bounds(np.zeros(5), 2.0, Gaussian(0.5), 0.001).upper)


def test_median_bounds_hold_for_laplace_noise_in_l1():
    # h(x + eps) = x_0 + eps_0 with Laplace noise: within ||delta||_1 <= D the smoothed median is
    # x_0 + delta_0, in [x_0 - D, x_0 + D]; the bound uses Laplace's own radius (required_p), not Phi.
    rng = np.random.default_rng(1)
    lap = Laplace(0.5)
    n, D, alpha, trials = 300, 0.2, 0.05, 2000
    assert order_indices(n, D, lap, alpha) != order_indices(n, D, Gaussian(0.5), alpha)  # not the Gaussian indices
    misses_u = misses_l = 0
    for _ in range(trials):
        b = median_bounds(0.1 + rng.laplace(0.0, lap.scale, n), D, lap, alpha)
        misses_u += b.upper < 0.1 + D
        misses_l += b.lower > 0.1 - D
    slack = 4 * math.sqrt(alpha * (1 - alpha) / trials)
    assert misses_u / trials <= alpha + slack and misses_l / trials <= alpha + slack
    assert misses_u > 0


def test_median_bounds_from_the_engines_values():
    class First(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x.flatten(1)[:, :1]

    x = torch.full((1, 4, 4), 0.2)
    engine = Engine(First(), None, Gaussian(0.25), channels_last=False)
    ((_, (vals,)),) = list(engine.values([Item(0, x, torch.Generator().manual_seed(3))], (2000,), batch_size=500))
    b = median_bounds(vals, D=0.1, noise=Gaussian(0.25), alpha=0.001)
    assert b.lower <= 0.2 - 0.1 and b.upper >= 0.2 + 0.1 and abs(b.median - 0.2) < 0.03


# -- denoisers and score matching ---------------------------------------------------------------

class GaussianScore(nn.Module):
    """The exact score of x + sigma z for data x ~ N(mu, tau^2 I): -(y - mu) / (tau^2 + sigma^2)."""

    def __init__(self, mu: float, tau: float, scale: float = 1.0):
        super().__init__()
        self.mu, self.tau, self.scale = mu, tau, scale
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, y, sigma):
        s = sigma.view(-1, *([1] * (y.dim() - 1)))
        return -self.scale * (y - self.mu) / (self.tau**2 + s**2)


def test_tweedie_with_the_exact_score_is_the_mmse_denoiser():
    mu, tau = 0.4, 0.3
    y = torch.rand(5, 3, 4, 4)
    sigma = torch.tensor([0.1, 0.25, 0.5, 1.0, 2.0])
    mmse = mu + (tau**2 / (tau**2 + sigma**2)).view(-1, 1, 1, 1) * (y - mu)  # E[x | y], Gaussian prior
    torch.testing.assert_close(tweedie(GaussianScore(mu, tau), y, sigma), mmse)


def test_dsm_loss_is_minimized_by_the_true_score_at_its_closed_form_value():
    mu, tau, sigma, d = 0.5, 0.2, 0.3, 48
    g = torch.Generator().manual_seed(0)
    x = mu + tau * torch.randn(20_000, 3, 4, 4, generator=g)
    sig = torch.full((20_000,), sigma)
    true = dsm_loss(GaussianScore(mu, tau), x, sig, g).mean().item()
    assert true == pytest.approx(d * tau**2 / (2 * (tau**2 + sigma**2)), rel=0.02)
    for wrong in (0.7, 1.4):
        assert dsm_loss(GaussianScore(mu, tau, scale=wrong), x, sig, g).mean().item() > true * 1.02
    step = DenoisingScoreMatching(geometric_sigmas(1.0, 0.01, 10))
    loss, _ = step(GaussianScore(mu, tau), Batch(x[:64], torch.zeros(64, dtype=torch.long), torch.arange(64)), g)
    assert loss.item() > 0
    assert torch.allclose(geometric_sigmas(1.0, 0.01, 3), torch.tensor([1.0, 0.1, 0.01]))


def test_a_denoised_classifier_gets_each_rows_noise_level_from_the_engine():
    # Tweedie with the exact score shrinks y towards mu by tau^2 / (tau^2 + sigma^2): the value the
    # classifier sees depends on each item's own sigma, and must match the closed form row by row.
    class First(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :1]

    mu, tau = 0.0, 0.5
    model = Denoised(TweedieDenoiser(GaussianScore(mu, tau)), First())
    engine = Engine(model, None, None, channels_last=False, noise_conditioned=True)
    x = torch.full((1, 2, 2), 0.8)
    items = [Item(s, x, torch.Generator().manual_seed(1), Gaussian(s)) for s in (0.25, 1.0)]
    out = dict(engine.values(items, (300,), batch_size=128))
    for s in (0.25, 1.0):
        eps = torch.randn((300, 1, 2, 2), generator=torch.Generator().manual_seed(1)) * s
        expected = (tau**2 / (tau**2 + s**2)) * (0.8 + eps.flatten(1)[:, 0])
        torch.testing.assert_close(out[s][0][:, 0], expected, rtol=0, atol=1e-5)


def test_denoiser_mse_step_of_the_identity_is_the_noise_energy():
    class Identity(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, y, sigma):
            return y + 0 * self.dummy

    x = torch.rand(4000, 1, 4, 4)
    loss, _ = DenoiserMSE(Gaussian(0.3))(Identity(), Batch(x, torch.zeros(4000, dtype=torch.long), torch.arange(4000)),
                                          torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(16 * 0.3**2, rel=0.02)  # E||eps||^2 = d sigma^2


# -- HeatSmoothing ------------------------------------------------------------------------------

def test_jacobian_estimate_is_exact_for_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    W = lin[1].weight.detach()
    x = torch.rand(3, 3, 2, 2)
    est = jacobian_norm_estimate(lin, x, kappa=4, delta=0.1, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same w draws, in the same order
    ws = [torch.randn((3, 5), generator=g) / 5**0.5 for _ in range(4)]
    exact = sum((w @ W).pow(2).sum(1) for w in ws)  # ||W^T w_j||^2 per input
    torch.testing.assert_close(est.detach(), exact, rtol=1e-4, atol=1e-6)
    many = jacobian_norm_estimate(lin, torch.rand(2000, 3, 2, 2), kappa=1, generator=torch.Generator().manual_seed(1))
    assert many.mean().item() == pytest.approx(W.pow(2).sum().item() / 5, rel=0.1)  # E = ||W||_F^2 / K


def test_heat_smoothing_flattens_the_model_and_keeps_its_frozen_copy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
    x = torch.rand(128, 1, 4, 4)
    data = ImageDataset("mnist", (x * 255).to(torch.uint8), torch.zeros(128, dtype=torch.long))
    probe = torch.rand(256, 1, 4, 4)
    before = jacobian_norm_estimate(model, probe, kappa=8, generator=torch.Generator().manual_seed(0)).mean().item()
    step = HeatSmoothing(sigma=1.0, epochs_per_timestep=2, timesteps=2, penalty_scale=5.0)
    fit(model, step, FitConfig(epochs=step.epochs, batch_size=32, lr=0.01, optimizer="adam", schedule="constant"), data=data,
        progress=False, channels_last=False)
    after = jacobian_norm_estimate(model, probe, kappa=8, generator=torch.Generator().manual_seed(0)).mean().item()
    assert after < 0.7 * before
    assert step.frozen is not None and set(step.state_dict()["frozen"]) == set(model.state_dict())


# -- attacks and SmoothAdv ----------------------------------------------------------------------

def test_l2_pgd_finds_the_closed_form_worst_case_of_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    w = (lin[1].weight[1] - lin[1].weight[0]).detach()  # margin of class 1 grows along w
    x = torch.full((1, 1, 4, 4), 0.5)
    y = torch.tensor([1])
    adv = l2_pgd(lambda z: nn.functional.cross_entropy(lin(z), y, reduction="sum"), x, eps=0.3, steps=50, clamp=None)
    delta = (adv - x).flatten()
    assert delta.norm().item() == pytest.approx(0.3, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(delta, -w, dim=0).item() > 0.999  # -eps w / ||w||
    attack = L2PGD(lin.train(), eps=0.3, steps=10)
    out = attack(x, y)
    assert lin.training and (out - x).norm() <= 0.3 + 1e-5 and out.min() >= 0 and out.max() <= 1
    assert "eps=0.3" in repr(attack)


def test_smoothadv_without_attack_is_noise_augmented_cross_entropy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    batch = Batch(x, y, torch.arange(8))
    loss, _ = SmoothAdv(Gaussian(0.25), m=2, eps=0.0, steps=4)(model, batch, torch.Generator().manual_seed(5))
    noise = Gaussian(0.25).sample((16, 1, 4, 4), generator=torch.Generator().manual_seed(5))
    manual = nn.functional.cross_entropy(model(x.repeat_interleave(2, 0) + noise), y.repeat_interleave(2))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    adv_loss, _ = SmoothAdv(Gaussian(0.25), m=2, eps=0.5, steps=4)(model, batch, torch.Generator().manual_seed(5))
    assert adv_loss.item() > loss.item()  # the attack raises the loss on the same noise


# -- variational selector -----------------------------------------------------------------------

def test_gaussian_kl_matches_torch_distributions():
    sigma_s = torch.tensor([0.1, 0.5, 1.0, 2.0])
    d = 7
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(0.0, sigma_s), torch.distributions.Normal(0.0, 0.5)) * d
    torch.testing.assert_close(gaussian_kl(sigma_s, 0.5, d), ref)


class ConstantSelector(nn.Module):
    """sigma_s = softplus(theta) for every input: the KL term alone is minimized at sigma_t."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(-1.0))

    def forward(self, x, sigma_a, lam):
        return nn.functional.softplus(self.theta).expand(x.shape[0])


def test_selector_trained_on_the_kl_term_alone_converges_to_the_target_level():
    data = ImageDataset("mnist", torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8), torch.zeros(64, dtype=torch.long))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    h = ConstantSelector()
    step = SelectorStep(classifier, sigma_a=0.25, sigma_t=0.5, n_f=2, lam=1.0)
    fit(h, step, FitConfig(epochs=30, batch_size=16, lr=0.05, optimizer="adam", schedule="constant", weight_decay=0.0),
        data=data, progress=False, channels_last=False)
    assert nn.functional.softplus(h.theta).item() == pytest.approx(0.5, rel=0.02)
    assert all(p.grad is None for p in classifier.parameters())  # the classifier stays frozen
    dual = SelectorStep(classifier, sigma_a=0.25, sigma_t=0.5, n_f=2, n_h=5, sigma_m=0.1)
    loss, metrics = dual(h, Batch(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long), torch.arange(4)), torch.Generator())
    assert loss.requires_grad and metrics["sigma_s"] == pytest.approx(0.5, rel=0.02)
