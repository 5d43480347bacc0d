"""Chapter 1: denoisers from a learned score, checked against closed forms and the published loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rsbook.core.engine import Engine, Item
from rsbook.core.noise import Gaussian, Laplace, Uniform
from rsbook.core.reference import reference_certify
from rsbook.core.runner import image_generator
from rsbook.denoiser_models import DnCNN, ScoreUNet, build_denoiser
from rsbook.methods.denoise import Anneal, AnnealingDenoiser, Denoised, TweedieDenoiser, anneal, data_gradient, project_box, tweedie
from rsbook.methods.mixture import GaussianMixture, expected_norm, fit_score, map_error_single
from rsbook.training.denoiser import DenoiserConfig


def _mixture() -> GaussianMixture:
    return GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]), tau=0.4, weights=torch.tensor([0.5, 0.3, 0.2]))


class ZeroScore(nn.Module):
    def forward(self, x, sigma):
        return torch.zeros_like(x)


# -- the mixture's closed forms ---------------------------------------------------------------------

def test_mixture_score_is_the_gradient_of_its_log_density():
    mix = _mixture()
    y = (3 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).requires_grad_(True)
    for sigma in (0.1, 0.7):
        (grad,) = torch.autograd.grad(mix.log_density(y, sigma).sum(), y)
        torch.testing.assert_close(mix.score(y.detach(), sigma), grad)


def test_tweedie_with_the_exact_mixture_score_equals_the_posterior_mean():
    # Proposition 3.1: y + sigma^2 grad log p_sigma(y) = E[x | y]; the posterior mean is computed from
    # the components' posterior means, not from the score.
    mix = _mixture()
    g = torch.Generator().manual_seed(1)
    for sigma in (0.1, 0.5, 1.5):
        y = mix.sample(500, g) + sigma * torch.randn(500, 2, generator=g, dtype=torch.float64)
        torch.testing.assert_close(tweedie(mix.score, y, sigma), mix.mmse(y, sigma))
        # the wrong level gives another answer: the check can fail
        assert (tweedie(mix.score, y, sigma / 2) - mix.mmse(y, sigma)).abs().max() > 1e-2
    # and the posterior mean is what it claims: the MMSE over many draws beats Tweedie at the wrong level
    x = mix.sample(20_000, g)
    y = x + 0.8 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert ((mix.mmse(y, 0.8) - x) ** 2).sum(1).mean() < ((tweedie(mix.score, y, 0.5) - x) ** 2).sum(1).mean()


def test_a_score_network_trained_by_dsm_approaches_the_mmse_denoiser():
    mix = _mixture()
    g = torch.Generator().manual_seed(2)
    net = fit_score(mix, steps=800, generator=torch.Generator().manual_seed(3))
    sigma = 0.5
    x = mix.sample(4000, g)
    y = (x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)).float()
    exact = mix.mmse(y.double(), sigma)
    with torch.no_grad():
        learned = tweedie(net, y, sigma).double()
    gap = (learned - exact).norm(dim=1).mean()
    assert gap < 0.15 * (y.double() - exact).norm(dim=1).mean()  # far closer to the MMSE than the noisy input
    mse = lambda d: ((d - x) ** 2).sum(1).mean().item()  # noqa: E731
    assert mse(learned) < 1.1 * mse(exact)


def test_fixed_level_annealing_converges_to_the_closed_form_map_whose_error_grows_with_sigma():
    # One component N(x*, tau^2 I): Algorithm 1 at one level with many small steps reaches
    # x* + U (tau^2 + sigma^2) / (tau^2 + 2 sigma^2); its mean error is map_error_single (Theorem 3.2's shape).
    tau, d = 0.5, 2
    mix = GaussianMixture(torch.zeros(1, d), tau)
    g = torch.Generator().manual_seed(4)
    errors = []
    for sigma in (0.1, 0.3, 0.6, 1.0):
        u = sigma * torch.randn(20_000, d, generator=g, dtype=torch.float64)
        xhat = anneal(mix.score, u, sigma, "gaussian", Anneal(levels=1, steps=400, eta=0.05))
        torch.testing.assert_close(xhat, u * (tau**2 + sigma**2) / (tau**2 + 2 * sigma**2), rtol=1e-6, atol=1e-8)
        errors.append(xhat.norm(dim=1).mean().item())
        assert errors[-1] == pytest.approx(map_error_single(sigma, tau, d), rel=0.02)
    assert all(a < b for a, b in zip(errors, errors[1:]))
    assert expected_norm(2) == pytest.approx(math.sqrt(math.pi / 2))


# -- Algorithm 1's steps, by hand -------------------------------------------------------------------

def test_laplace_step_by_hand():
    y = torch.zeros(1, 3)
    x0 = torch.tensor([[1.0, -2.0, 0.0]])
    sigma = math.sqrt(2.0)  # b = 1: grad phi(u) = sign(u)
    torch.testing.assert_close(data_gradient("laplace", y, x0, torch.tensor([sigma])), torch.tensor([[-1.0, 1.0, 0.0]]))
    # one step, zero score, a = eta sigma^2 = 1: x0 + sign(y - x0)
    out = anneal(ZeroScore(), y, sigma, "laplace", Anneal(levels=1, steps=1, eta=0.5), x0=x0)
    torch.testing.assert_close(out, torch.tensor([[0.0, -1.0, 0.0]]))


def test_gaussian_step_by_hand():
    y = torch.tensor([[1.0, 1.0]])
    x0 = torch.tensor([[3.0, -1.0]])
    # a = eta sigma^2 = 0.5 sigma^2; data gradient (y - x) / sigma^2: x0 + 0.5 (y - x0)
    out = anneal(ZeroScore(), y, 0.4, "gaussian", Anneal(levels=1, steps=1, eta=0.5), x0=x0)
    torch.testing.assert_close(out, torch.tensor([[2.0, 0.0]]))


def test_uniform_step_is_a_projection_onto_the_box():
    y = torch.tensor([[0.0, 0.0, 0.0, 0.5]])
    sigma = 1 / math.sqrt(3.0)  # half-width l = 1
    x0 = torch.tensor([[2.0, -0.5, -3.0, 1.2]])
    torch.testing.assert_close(project_box(x0, y, torch.tensor([sigma])), torch.tensor([[1.0, -0.5, -1.0, 1.2]]))
    out = anneal(ZeroScore(), y, sigma, "uniform", Anneal(levels=1, steps=1), x0=x0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -0.5, -1.0, 1.2]]))


@pytest.mark.parametrize("noise", ["gaussian", "laplace", "uniform"])
def test_data_term_pulls_toward_the_observation(noise):
    # NOTES.md: the printed Algorithm 1 has grad phi(x - y), which would push x away from y.
    g = torch.Generator().manual_seed(5)
    y = torch.rand(8, 3, 4, 4, generator=g)
    x0 = y + 0.8 * torch.randn(y.shape, generator=g)
    sigma = torch.full((8,), 0.3)
    out = anneal(ZeroScore(), y, sigma, noise, Anneal(levels=2, steps=2, eta=0.3), x0=x0)
    before, after = (x0 - y).flatten(1).norm(dim=1), (out - y).flatten(1).norm(dim=1)
    assert bool((after < before).all())
    if noise != "uniform":  # the printed sign moves away
        printed = x0 - 0.3 * 0.09 * data_gradient(noise, y, x0, sigma)
        assert bool(((printed - y).flatten(1).norm(dim=1) > before).all())


def test_one_step_annealing_at_eta_one_is_tweedie():
    net = ScoreUNet(width=8)
    torch.nn.init.normal_(net.out[-1].weight, std=0.05)
    y = torch.rand(6, 3, 32, 32)
    sigma = torch.tensor([0.1, 0.25, 0.35, 0.5, 0.8, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(anneal(net, y, sigma, "gaussian", Anneal(levels=1, steps=1)), tweedie(net, y, sigma))
        # batched over rows: the same as denoising each row alone (no cross-row coupling)
        multi = AnnealingDenoiser(net, "laplace", Anneal(levels=3, steps=2))
        together = multi(y, sigma)
        alone = torch.cat([multi(y[i : i + 1], sigma[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert Anneal(levels=3, steps=2).evaluations == 6
    assert Anneal(levels=3, final=0.25).factors() == pytest.approx([1.0, 0.5, 0.25])


# -- the networks -----------------------------------------------------------------------------------

def test_score_unet_takes_any_sigma_and_dncnn_is_residual():
    net = ScoreUNet(width=8)
    y = torch.rand(3, 3, 32, 32)
    assert torch.count_nonzero(net(y, torch.tensor([0.013, 0.45, 0.9]))) == 0  # zero-initialised output layer
    torch.nn.init.normal_(net.out[-1].weight, std=0.05)
    out = net(y, torch.tensor([0.013, 0.45, 0.9]))
    assert out.shape == y.shape and bool(torch.isfinite(out).all())
    dn = DnCNN(depth=4, width=8).eval()
    torch.nn.init.zeros_(dn.net[-1].weight)
    torch.nn.init.zeros_(dn.net[-1].bias)
    torch.testing.assert_close(dn(y, None), y)  # residual: y - net(y)
    with pytest.raises(ValueError, match="unknown denoiser arch"):
        build_denoiser("unet9000")
    with pytest.raises(ValueError, match="objective"):
        DenoiserConfig(objective="l1")
    with pytest.raises(ValueError, match="classifier"):
        DenoiserConfig(objective="stability", arch="dncnn")


# -- through the engine -----------------------------------------------------------------------------

def test_a_denoised_classifier_through_the_engine_counts_as_the_published_loop():
    torch.manual_seed(0)
    net = ScoreUNet(width=4)
    torch.nn.init.normal_(net.out[-1].weight, std=0.2)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    model = Denoised(AnnealingDenoiser(net, "gaussian", Anneal(levels=2, steps=1)), clf).eval()
    g = torch.Generator().manual_seed(6)
    xs = [torch.rand(3, 8, 8, generator=g) for _ in range(3)]
    noise = Gaussian(0.5)
    engine = Engine(model, 4, noise, channels_last=False, noise_conditioned=True)
    got = dict(engine.counts([Item(i, x, image_generator(0, i, "cpu")) for i, x in enumerate(xs)], (100, 700), batch_size=256))
    for i, x in enumerate(xs):
        ref0, ref = reference_certify(lambda z: model(z, torch.full((z.shape[0],), 0.5)), x, 100, 700, 0.001, noise, 4,
                                      seed=image_generator(0, i, "cpu").initial_seed())
        np.testing.assert_array_equal(got[i][0], ref0)
        np.testing.assert_array_equal(got[i][1], ref)
        assert (ref > 0).sum() >= 2  # the noise matters
    # a different noise level gives different counts: the check can fail
    other = Engine(model, 4, Gaussian(0.3), channels_last=False, noise_conditioned=True)
    assert not np.array_equal(dict(other.counts([Item(0, xs[0], image_generator(0, 0, "cpu"))], (100, 700), 256))[0][1], got[0][1])


def test_the_one_step_denoiser_refuses_non_gaussian_noise(tmp_path):
    from rsbook.artifacts import ArtifactStore
    from rsbook.papers import score_denoising as ch

    with pytest.raises(ValueError, match="Gaussian noise only"):
        ch.certified_model(ch.method("one_step", "smoke"), "laplace", ArtifactStore(tmp_path))
    with pytest.raises(ValueError, match="multi_step"):
        ch.Method("multi_step", ch.classifier_config("smoke"), ch.score_config("smoke"))
    for nz in (Laplace(0.5), Uniform(0.5)):  # the chapter's l1 radii use the package's noises
        assert nz.norm == "l1"


def test_the_imagenet_path_packs_the_folder_loads_the_weights_and_certifies_every_image(tmp_path):
    import dataclasses

    from rsbook.data import imagenet_subset, load_imagenet
    from rsbook.papers import score_denoising as ch

    run = ch.synthetic_imagenet(str(tmp_path / "in"), classes=2, per_class=2, resolution=32)
    data = imagenet_subset(run.root, "val", every=1, resolution=32)
    folder = load_imagenet(run.root, "val", 32)
    assert data.name == "imagenet" and len(data) == len(folder) == 4
    for i in range(4):  # the packed uint8 images are torchvision's transform output, to rounding
        x, y = folder[i]
        assert (data[i][0] - x).abs().max() <= 0.5 / 255 + 1e-6 and data[i][1] == y
    log = ch.imagenet_certification(run, str(tmp_path / "log.tsv"), progress=False)
    assert list(log["idx"]) == [0, 1, 2, 3] and list(log["label"]) == [0, 0, 1, 1]
    assert (tmp_path / "log.tsv.json").is_file()
    with pytest.raises(ValueError, match="different run"):
        ch.imagenet_certification(dataclasses.replace(run, sigma=0.5), str(tmp_path / "log.tsv"), progress=False)


def test_the_imagenet_path_names_a_missing_corrupt_or_mismatched_weights_file(tmp_path):
    import dataclasses

    from rsbook.papers import score_denoising as ch

    run = ch.synthetic_imagenet(str(tmp_path / "in"), classes=1, per_class=1, resolution=32)
    with pytest.raises(FileNotFoundError, match="ResNet-50 weights not found"):
        ch.imagenet_model(dataclasses.replace(run, classifier_weights=str(tmp_path / "nope.pth")))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth are not a readable PyTorch state dict"):
        ch.imagenet_model(dataclasses.replace(run, score_weights=str(tmp_path / "bad.pth")))
    with pytest.raises(ValueError, match="set score_width to its width"):
        ch.imagenet_model(dataclasses.replace(run, score_width=16))
    with pytest.raises(ValueError, match="Gaussian noise only"):
        dataclasses.replace(run, noise="laplace")
    with pytest.raises(FileNotFoundError):
        ch.imagenet_certification(dataclasses.replace(run, root=str(tmp_path / "none")), str(tmp_path / "l.tsv"), progress=False)


def test_a_readers_overrides_change_the_certification_and_keep_the_networks():
    from rsbook.papers import score_denoising as ch

    base = ch.settings("cpu")
    s = ch.settings("cpu", n=5000, every=50, sigmas="0.3, 0.6")
    assert (s.n, s.every, s.multi_every, s.sigmas) == (5000, 50, base.multi_every, (0.3, 0.6))
    assert (s.score_width, s.score_epochs, s.anneal) == (base.score_width, base.score_epochs, base.anneal)
    m = ch.method("one_step", "cpu")
    cfg = ch.certify_config(m, "gaussian", 0.3, "cpu", s=s)
    assert (cfg.n, cfg.every) == (5000, 50) and ch.certify_config(m, "gaussian", 0.3, "cpu").n == base.n
    _, planned = ch.planned_work("cpu", s=s)
    assert {p.config.sigma for p in planned if p.config.noise == "gaussian"} == {0.3, 0.6, base.unseen_sigma}
    for bad in ({"sigmas": "0.25,x"}, {"sigmas": "-0.5"}, {"n": -1}, {"every": 2.5}):
        with pytest.raises(ValueError):
            ch.settings("cpu", **bad)


def test_a_readers_rerun_is_announced_with_an_estimate_from_the_committed_rates(capsys):
    from rsbook.papers import score_denoising as ch

    assert ch.announce_work("cpu", ch.store("cpu")) == 0.0  # the published run: everything is committed
    s = ch.settings("cpu", n=2000, every=500, multi_every=1000)
    est = ch.announce_work("cpu", ch.store("cpu"), s=s)
    out = capsys.readouterr().out
    # 15 chapter logs (4 of them multi-step, on 10 images; the rest on 20) and 2 white-box logs
    # (chapter 0 has none at N = 2,000), each image n0 + N = 2,100 samples
    assert "computes 17 certification logs" in out and "trains 0 models" in out
    assert f"{(13 * 20 + 4 * 10) * 2100:,} forward passes" in out
    assert est is not None and est > 60 and "cnn4 behind score_unet x3" in out
