"""Chapter 3's building blocks (HeatSmoothing) against autograd, scipy and foolbox."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, special, stats
from torch import nn

from rsbook.methods.attacks import l2_pgd
from rsbook.methods.heat import HeatSmoothing, jacobian_norm_estimate
from rsbook.core.noise import Gaussian
from rsbook.methods.soft import SoftSmoothed, noisy_copies
from rsbook.methods.step import Batch


def _mlp(seed: int = 0, d: int = 6, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, k)).double()


def test_the_jl_finite_difference_penalty_is_the_squared_jacobian_norm_in_expectation():
    # For w ~ N(0, I/K) and d the normalized gradient of w . v, the difference quotient tends to
    # ||J^T w||, so each term's expectation is ||J||_F^2 / K; exact J from autograd.
    v = _mlp()
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = torch.stack([torch.autograd.functional.jacobian(v, xi).pow(2).sum() for xi in x])
    kappa, K = 4000, 4
    est = jacobian_norm_estimate(v, x, kappa=kappa, delta=1e-5, generator=torch.Generator().manual_seed(2))
    # the mean of kappa i.i.d. terms: relative standard error about sqrt(2 / kappa) at most
    assert torch.allclose(est * K / kappa, exact, rtol=4 * math.sqrt(2 / kappa))
    # and a wrong Jacobian (the estimate of a model twice as steep) is told apart
    steep = nn.Sequential(v, nn.Linear(K, K, bias=False).double())
    with torch.no_grad():
        steep[1].weight.copy_(2 * torch.eye(K, dtype=torch.float64))
    est2 = jacobian_norm_estimate(steep, x, kappa=kappa, delta=1e-5, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(est2 * K / kappa, 4 * exact, rtol=4 * math.sqrt(2 / kappa))


def test_the_heat_loss_without_its_penalty_is_the_quadratic_match_to_the_frozen_copy():
    model = _mlp().float()
    step = HeatSmoothing(sigma=0.1, epochs_per_timestep=1, timesteps=5, penalty_scale=0.0)
    step.start_epoch(model, 0)
    before = copy.deepcopy(model)
    with torch.no_grad():  # the model moves away from its frozen copy, as during training
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(4))
    loss, metrics = step(model, Batch(x, torch.zeros(8, dtype=torch.long), torch.arange(8)), torch.Generator().manual_seed(5))
    expected = 0.5 * (model(x) - before(x)).pow(2).sum(1).mean()
    loss, expected = float(loss.detach()), float(expected.detach())
    assert loss == pytest.approx(expected, rel=1e-6) and loss > 0
    assert metrics["match"] == pytest.approx(expected, rel=1e-6)


def test_the_soft_smoothed_classifier_shares_one_perturbation_and_draws_fresh_noise_each_call():
    x = torch.rand(2, 3, 4, 4)
    delta = 0.1 * torch.randn(2, 3, 4, 4)
    a = noisy_copies(x, 5, Gaussian(0.25), torch.Generator().manual_seed(0))
    b = noisy_copies(x + delta, 5, Gaussian(0.25), torch.Generator().manual_seed(0))
    assert torch.allclose(b - a, delta.repeat_interleave(5, dim=0), atol=1e-6)  # every copy moves by the same delta

    soft = SoftSmoothed(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), Gaussian(0.25), m=4)
    soft.generator = torch.Generator().manual_seed(0)
    first, second = soft(x), soft(x)
    assert not torch.allclose(first, second)  # fresh noise on every call, not one draw reused
    soft.generator = torch.Generator().manual_seed(0)
    assert torch.allclose(soft(x), first)  # and reproducible from the generator


def test_the_soft_smoothed_classifier_converges_to_the_gaussian_average_of_a_linear_softmax_model():
    # Two classes with logits (0, w.x + b): G(x)_1 = E[sigmoid(w.(x + eps) + b)], a 1-D Gaussian
    # integral computed by scipy.
    class TwoClass(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(5, 1).double()

        def forward(self, z):
            out = self.lin(z)
            return torch.cat([torch.zeros_like(out), out], dim=1)

    model = TwoClass().requires_grad_(False)
    sigma, m = 0.5, 200_000
    x = torch.tensor([[0.3, -0.2, 0.1, 0.4, -0.5]], dtype=torch.float64)
    mu = float(model.lin(x))
    s = sigma * float(model.lin.weight.norm())
    want = integrate.quad(lambda z: special.expit(z) * stats.norm.pdf(z, mu, s), mu - 12 * s, mu + 12 * s)[0]
    soft = SoftSmoothed(model, Gaussian(sigma), m=m)
    soft.generator = torch.Generator().manual_seed(1)
    got = float(soft(x)[0, 1])
    se = math.sqrt(want * (1 - want) / m)
    assert abs(got - want) < 4 * se
    soft.m = 20  # a few draws are a noisy estimate of the same value
    spread = np.std([float(soft(x)[0, 1]) for _ in range(50)])
    assert spread > 5 * se


def test_the_in_loop_pgd_takes_the_same_steps_as_foolbox_l2pgd():
    import foolbox as fb
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    eps, steps = 0.5, 10
    ours = l2_pgd(lambda z: F.cross_entropy(model(z), y, reduction="sum"), x, eps, steps)
    attack = fb.attacks.L2PGD(abs_stepsize=2 * eps / steps, steps=steps, random_start=False)
    _, theirs, _ = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=eps)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert ((ours - x).flatten(1).norm(dim=1) <= eps + 1e-5).all()
    assert F.cross_entropy(model(ours), y) > F.cross_entropy(model(x), y)


def test_the_1d_heat_update_approaches_the_gaussian_average_and_solves_its_variational_problem():
    from scipy.ndimage import gaussian_filter1d

    from rsbook.methods.heat import adversarial_distance_1d, heat_flow_1d, heat_step_1d

    x = np.linspace(-3, 3, 1201)
    dx = x[1] - x[0]
    u0 = np.tanh(4 * x) + 2 * np.exp(-((x + 0.5) ** 2) / (2 * 0.05**2))
    sigma = 0.3
    # one step minimizes its discrete energy: the gradient of the energy vanishes at v
    v = heat_step_1d(u0, dx, sigma, h=0.2)
    a = 0.5 * 0.2 * sigma**2
    grad = (v - u0) - a * np.gradient(np.gradient(v, dx), dx)
    assert np.abs(grad[5:-5]).max() < 1e-2 * np.abs(u0).max()
    # many steps converge to the Gaussian average (scipy's filter, reflecting ends)
    want = gaussian_filter1d(u0, sigma / dx, mode="reflect", truncate=8)
    errors = [np.abs(heat_flow_1d(u0, dx, sigma, t)[-1] - want)[200:-200].max() for t in (5, 50, 500)]
    assert errors[2] < 0.01 and errors[0] > errors[1] > errors[2]
    # the outlier at x = -0.5 is classified positive at first, close to a boundary; the flow
    # flips it and moves it far from any boundary (the paper's Figure 3 and 4 story)
    assert np.interp(-0.5, x, u0) > 0 and adversarial_distance_1d(x, u0, -0.5) < 0.1
    last = heat_flow_1d(u0, dx, sigma, 5)[-1]
    assert np.interp(-0.5, x, last) < 0 and adversarial_distance_1d(x, last, -0.5) > 0.4
    assert adversarial_distance_1d(x, np.ones_like(x), 0.0) == math.inf


def test_the_l_bound_of_an_exact_gaussian_average_never_exceeds_the_true_distance():
    # A half-space classifier smoothed at sigma has p = (Phi(t), 1 - Phi(t)), t = w.x / (sigma |w|);
    # its decision boundary is at distance sigma |t|. The L-bound must stay below it, and be tight
    # to first order at the boundary (slope sqrt(2 / pi) * sqrt(pi / 2) = 1).
    from rsbook.methods.heat import l_bound

    sigma = 0.25
    t = torch.linspace(-4, 4, 161, dtype=torch.float64)
    p = torch.tensor(stats.norm.cdf(t.numpy()))
    bound = l_bound(torch.stack([p, 1 - p], dim=1), sigma)
    assert (bound <= sigma * t.abs() + 1e-12).all()
    near = t.abs() < 0.05
    assert torch.allclose(bound[near], sigma * t.abs()[near], rtol=1e-3, atol=1e-12)
    with pytest.raises(ValueError):
        l_bound(torch.stack([p, 1 - p], dim=1), 0.0)


def test_heat_finetuning_reads_no_labels_leaves_its_base_alone_and_is_stored(tmp_path):
    import dataclasses

    from rsbook.infra.artifacts import ArtifactStore
    from rsbook.infra.data import load_train_subset
    from rsbook.training.classifier import TrainConfig, trained_model
    from rsbook.training.finetune import HeatConfig, finetune
    from rsbook.training.stored import trained

    base_cfg = TrainConfig(sigma=0.0, epochs=1, batch_size=32, lr=0.01, schedule="cosine", train_subset=32)
    cfg = HeatConfig(base_cfg, sigma=1.0, timesteps=2, epochs_per_timestep=1, kappa=2, batch_size=32, lr=0.1, train_subset=32)
    base_store, store = ArtifactStore(tmp_path / "base"), ArtifactStore(tmp_path / "heat")
    base = trained_model(base_cfg, base_store, progress=False)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    data = load_train_subset("cifar10", 32)
    tuned, history = finetune(cfg, base, data, progress=False)
    assert len(history) == 2 and all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    moved = max(float((a - before[k]).abs().max()) for k, a in tuned.state_dict().items() if a.is_floating_point())
    assert moved > 1e-4
    shuffled = dataclasses.replace(data, labels=data.labels[torch.randperm(32, generator=torch.Generator().manual_seed(0))])
    again, _ = finetune(cfg, base, shuffled, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))
    stored = trained(cfg, store, progress=False, store_of=lambda c: base_store)
    assert store.exists(cfg, "pt") and store.metadata(cfg, "pt")["history"]
    assert base_store.exists(base_cfg, "pt") and not store.exists(base_cfg, "pt")  # the base stays in its own store
    loaded = trained(cfg, store, progress=False, store_of=lambda c: base_store)
    assert all(torch.equal(a, b) for a, b in zip(stored.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(TypeError, match="no stored model for a dict"):
        trained({}, store)
    with pytest.raises(TypeError, match="TrainConfig"):
        HeatConfig(base_cfg.__dict__)  # a dict is not a config
    assert HeatConfig(cfg).base == cfg  # a fine-tuning of a fine-tuning (Table 4's chain) is fine
    with pytest.raises(ValueError):
        HeatConfig(base_cfg, sigma=0.0)


def test_foolbox_attacks_the_soft_smoothed_classifier_through_its_log_probabilities():
    import foolbox as fb

    from rsbook.methods.soft import SoftSmoothedLogits

    torch.manual_seed(0)
    base = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
    soft = SoftSmoothed(base, Gaussian(0.25), m=8)
    logits = SoftSmoothedLogits(soft).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    soft.generator = torch.Generator().manual_seed(2)
    g = soft(x)
    soft.generator = torch.Generator().manual_seed(2)
    assert torch.allclose(torch.softmax(logits(x), 1), g, atol=1e-6)  # softmax(log G) = G
    soft.generator = None
    y = base(x).argmax(1)
    _, adv, _ = fb.attacks.L2PGD(steps=5, random_start=False)(fb.PyTorchModel(logits, bounds=(0, 1)), x, y, epsilons=1.0)
    assert ((adv - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()
    soft.m = 4096  # the attack lowered the smoothed probability of the true class (estimated with many draws)
    p_clean, p_adv = (soft(z).gather(1, y[:, None]).mean() for z in (x, adv))
    assert p_adv < p_clean


def _linear_classifier(seed: int = 0, d: int = 3 * 8 * 8, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.mul_(4.0)
    return nn.Sequential(nn.Flatten(), lin).eval()


def _distance_to_boundary(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Closed form for a linear classifier (no box): min over j != y of (z_y - z_j) / ||w_y - w_j||."""
    lin = model[1]
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = lin.weight.detach()
    dists = []
    for i in range(len(x)):
        others = [j for j in range(z.shape[1]) if j != y[i]]
        dists.append(min(float((z[i, y[i]] - z[i, j]) / (w[y[i]] - w[j]).norm()) for j in others))
    return torch.tensor(dists)


def test_adversarial_distances_are_never_below_the_true_distance_and_ddn_nearly_reaches_it():
    from rsbook.methods.distances import adversarial_distances

    model = _linear_classifier()
    # images in the middle of the box, so that [0, 1] never binds before the boundary
    x = 0.5 + 0.02 * torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    true = _distance_to_boundary(model, x)
    assert (true < 0.4).all()  # well inside eps = 4 and far from the box
    with torch.no_grad():
        y = model(x).argmax(1)
    d_pgd, adv_pgd = adversarial_distances(model, "pgd", x, y, eps=4.0, steps=20)
    d_ddn, adv_ddn = adversarial_distances(model, "ddn", x, y, eps=4.0, steps=100)
    with torch.no_grad():
        assert (model(adv_pgd).argmax(1) != y).all() and (model(adv_ddn).argmax(1) != y).all()
    assert torch.allclose(d_pgd, (adv_pgd - x).flatten(1).norm(dim=1), atol=1e-5)
    # a misclassified point can never be closer than the boundary
    assert (d_pgd >= true - 1e-4).all() and (d_ddn >= true - 1e-4).all()
    # PGD moves 2 eps / steps = 0.4 per step: its first misclassified iterate is within one step
    assert (d_pgd <= true + 0.4 + 1e-4).all()
    # DDN converges to the minimal perturbation
    assert (d_ddn <= true * 1.1 + 1e-3).all()
    # a wrong label gives distance 0 (the clean image is already misclassified)
    d0, _ = adversarial_distances(model, "ddn", x[:2], (y[:2] + 1) % 3, eps=4.0, steps=5)
    assert (d0 == 0).all()
    with pytest.raises(ValueError, match="attack must be one of"):
        adversarial_distances(model, "fgsm", x, y)


def test_pgd_adversarial_training_takes_the_closed_form_worst_case_loss_of_a_linear_model():
    from rsbook.methods.adversarial import PGDAdversarialTraining

    model = _linear_classifier(k=2)
    lin = model[1]
    x = 0.5 + 0.01 * torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    eps = 0.05
    loss, metrics = PGDAdversarialTraining(eps=eps, steps=10)(model, Batch(x, y, torch.arange(6)), torch.Generator())
    # the worst case in the l2 ball lowers the margin z_y - z_other by eps * ||w_y - w_other||
    with torch.no_grad():
        z = model(x)
        margin = z.gather(1, y[:, None])[:, 0] - z.gather(1, (1 - y)[:, None])[:, 0]
        worst = margin - eps * (lin.weight[0] - lin.weight[1]).norm()
        want = F.softplus(-worst).mean()  # two-class cross-entropy at the worst margin
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    assert model.training  # the step hands the model back in training mode
    with pytest.raises(ValueError):
        PGDAdversarialTraining(eps=0.0)


def test_the_chapter_certifies_deterministic_models_without_selection_samples():
    from rsbook.core.certify import Smooth
    from rsbook.runs.runner import certification_log
    from rsbook.infra.data import test_subset
    from rsbook.papers import heat_smoothing as ch

    for name in ch.MODELS:
        assert (ch.certify_config(name, "cpu").selection == "clean") == (name in ch.DETERMINISTIC)

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = 0
            self.lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

        def forward(self, x):
            self.seen += x.shape[0]
            return self.lin(x)

    import dataclasses
    import tempfile

    from rsbook.infra.artifacts import ArtifactStore

    data = test_subset("cifar10", 2000)
    for selection in ("clean", "noise"):
        net = Counting().eval()
        cfg = dataclasses.replace(ch.certify_config("heat", "cpu"), n0=30, n=50, every=2000, selection=selection)
        with tempfile.TemporaryDirectory() as tmp:
            log = certification_log(cfg, Smooth(net, 10, compile=False), data, ArtifactStore(tmp), progress=False)
        per_image = 50 + (30 if selection == "noise" else 0)
        # clean selection: one clean forward pass per image, and no noisy selection samples
        assert net.seen == len(data) * per_image + (len(data) if selection == "clean" else 0)
        with torch.no_grad():
            clean = net.lin(torch.stack([data[i][0] for i in range(len(data))])).argmax(1).numpy()
        pred = log["predict"].to_numpy()
        if selection == "clean":  # the certified class, where not abstaining, is the clean input's
            assert (pred[pred >= 0] == clean[pred >= 0]).all()


def test_chapter_3_announces_fine_tunings_and_attack_logs_at_the_measured_rates(tmp_path, monkeypatch, capsys):
    import json

    from rsbook.infra.artifacts import ArtifactStore
    from rsbook.papers import heat_smoothing as ch

    monkeypatch.setattr(ch, "store", lambda profile, recompute=False: ArtifactStore(tmp_path))
    s = ch.settings("cpu")
    cnn = {"arch": "cnn4", "dataset": "cifar10"}
    metas = {  # stored evidence: seconds per training image 0.05 (heat), 0.01 (SmoothAdv), 0.007 (PGD); per test image 6 / 0.1
        "heatconfig-a": {"type": "HeatConfig", "base": cnn, "kappa": 10, "timesteps": 5, "train_subset": 1000,
                         "history": [{"seconds": 50.0}] * 2},
        "advconfig-b": {"type": "AdvConfig", "base": cnn, "method": "smoothadv", "steps": 4, "m": 1, "train_subset": 0,
                        "history": [{"seconds": 500.0}]},
        "advconfig-c": {"type": "AdvConfig", "base": cnn, "method": "pgd", "steps": 4, "m": 1, "train_subset": 0,
                        "history": [{"seconds": 350.0}]},
        "robustnessconfig-d": {"type": "RobustnessConfig", "model": cnn, "stochastic": True, "attack_m": 32, "steps": 20,
                               "audit_n": s.audit_n, "images": 10, "seconds": 60.0},
        "robustnessconfig-e": {"type": "RobustnessConfig", "model": cnn, "stochastic": False, "attack_m": 32, "steps": 20,
                               "audit_n": s.audit_n, "images": 10, "seconds": 1.0},
    }
    for name, cfg in metas.items():
        extra = {k: cfg.pop(k) for k in ("history", "images", "seconds") if k in cfg}
        (tmp_path / f"{name}.json").write_text(json.dumps({"config": cfg, **extra}))
    ch.announce_work("cpu")
    out = capsys.readouterr().out
    heat = 0.05 * (2 * 10_000 * 5 + 10_000 * 1)  # two HeatSmoothing models (5 timesteps) and Table 4's pass, 10,000 images each
    adv = 0.01 * 50_000 + 0.007 * 50_000  # one epoch each
    attacks = 100 * (2 * 6.0 + 2 * 0.1)  # two stochastic and two deterministic models, 100 images
    hours = (heat + adv + attacks) / 3600  # 2.1 h
    assert f"5 fine-tunings and 4 attack logs (PGD and DDN, 100 images each): about {hours:.1f} h" in out, out


def test_per_input_generators_make_an_inputs_noise_independent_of_its_batch():
    from rsbook.methods.soft import noisy_copies

    x = torch.rand(3, 1, 2, 2)
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    batch = noisy_copies(x, 4, Gaussian(0.5), gens(7, 8, 9))
    alone = noisy_copies(x[1:2], 4, Gaussian(0.5), gens(8))
    assert torch.equal(batch[4:8], alone)  # input 1's copies: the same alone and in the batch
    expected = x[1:2] + 0.5 * torch.randn((4, 1, 2, 2), generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(alone, expected, rtol=0, atol=1e-6)  # Gaussian draws of its own generator
    with pytest.raises(ValueError, match="one per input"):
        noisy_copies(x, 4, Gaussian(0.5), gens(1, 2))


def test_the_refined_distance_is_the_segments_exact_crossing_to_its_resolution():
    from rsbook.methods.distances import adversarial_distances, segment_boundary

    model = _linear_classifier()
    x = 0.5 + 0.02 * torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    d_pgd, adv = adversarial_distances(model, "pgd", x, y, eps=4.0, steps=20)
    classify = lambda points, rows: model(points).argmax(1)  # noqa: E731
    refined, res = segment_boundary(classify, x, adv, y, scan=16, bisect=8)
    # closed form: the first t on x + t (adv - x) where another class's logit overtakes y's
    lin, delta = model[1], (adv - x).flatten(1)
    with torch.no_grad():
        z0, dz = lin(x.flatten(1)), delta @ lin.weight.T
    exact = []
    for i in range(len(x)):
        ts = [float((z0[i, y[i]] - z0[i, j]) / (dz[i, j] - dz[i, y[i]])) for j in range(3)
              if j != y[i] and dz[i, j] > dz[i, y[i]]]
        exact.append(min(t for t in ts if t > 0) * float(delta[i].norm()))
    exact = torch.tensor(exact)
    assert (refined >= exact - 1e-5).all() and (refined <= exact + res + 1e-5).all()
    assert (res < 0.4 / 16 / 2**8 * 1.01).all() and (refined < d_pgd - 1e-3).any()  # finer than one PGD step
    assert (refined >= _distance_to_boundary(model, x) - 1e-4).all()  # still never below the true distance
    # no adversarial point: inf; an endpoint the classifier does not misclassify: nan
    same, _ = segment_boundary(classify, x[:2], x[:2].clone(), y[:2])
    assert torch.isinf(same).all()
    none, _ = segment_boundary(classify, x[:2], x[:2] + 1e-3, y[:2])
    assert torch.isnan(none).all()


def test_the_fixed_noise_soft_classifier_is_deterministic_with_each_images_own_draws():
    from rsbook.methods.soft import FixedNoiseSoft

    model = _linear_classifier()
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    fixed = FixedNoiseSoft(model, Gaussian(0.5), 8, gens, (3, 8, 8))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([1, 0])
    assert torch.equal(fixed(x, rows), fixed(x, rows))
    eps1 = 0.5 * torch.randn((8, 3, 8, 8), generator=torch.Generator().manual_seed(4))  # image 1's own draws
    with torch.no_grad():
        want = model(x[0] + eps1).softmax(1).mean(0).argmax()
    assert fixed(x, rows)[0] == want


def test_the_audit_grid_finds_the_first_wrong_answer_and_counts_its_calls():
    from rsbook.methods.audit import audit_counts, first_wrong_on_grid

    x = torch.zeros(3, 2)
    true = [0.5, 2.0, 0.05]  # wrong beyond this distance from x_i; abstains just before it

    def answer(queries):
        out = []
        for i, _, p in queries:
            r = float(p.norm())
            out.append(1 if r >= true[i] else (-1 if r >= 0.9 * true[i] else 0))
        return out

    wrong, asked = first_wrong_on_grid(answer, x, torch.tensor([[1.0, 0], [0, 3.0], [1.0, 1.0]]), [1.2, 1.2, 0.0], [0, 0, 0], 12)
    assert wrong[0] == pytest.approx(0.5) and math.isinf(wrong[1]) and math.isinf(wrong[2])  # 0.5 = 5 x 0.1; 2.0 out of reach
    assert list(asked) == [5, 12, 0]  # image 2 has no radius: never asked
    assert audit_counts([0.6, 0.2, 0.0], [0.5, 0.5, 0.1], 3.0) == {"certified": 2, "violations": 1, "control violations": 2}


def test_predict_many_gives_predict_per_item():
    from rsbook.core.certify import ABSTAIN, Smooth, vote
    from rsbook.core.engine import Item

    smooth = Smooth(_linear_classifier(), 3, noise=("gaussian", 0.5), compile=False)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    many = list(smooth.predict_many([Item(i, x[i], torch.Generator().manual_seed(i)) for i in range(4)], 200, 0.001, None))
    one = [smooth.predict(x[i], 200, 0.001, None, torch.Generator().manual_seed(i)) for i in range(4)]
    assert [c for _, c in many] == one and [k for k, _ in many] == [0, 1, 2, 3]
    assert vote(np.array([60, 40, 0]), 0.001) == ABSTAIN and vote(np.array([90, 10, 0]), 0.001) == 0  # binomtest(60, 100): p = 0.057


def test_heat_smoothing_with_c_h_over_2_targets_the_gaussian_average_at_sigma():
    """The closed form: under a uniform density one step maps cos to cos / (1 + c sigma^2) (Euler-Lagrange
    ``v - f = c sigma^2 v''``), and the Gaussian average of cos at s is exp(-s^2 / 2) cos. With
    c = h / 2 the flow lands on the average at sigma; Algorithm 1's c = 1 overshoots to sigma sqrt(2 n_T)."""
    from rsbook.methods.heat import cosine_heat_flow, penalty_constant, target_sigma

    sigma, steps = 0.5, 5
    amplitude = {}
    for penalty in ("h/2", 1.0):
        amplitude[penalty] = cosine_heat_flow(sigma, steps, penalty)
        c = penalty_constant(penalty, steps)
        assert amplitude[penalty] == pytest.approx((1 + c * sigma**2) ** -steps, rel=0.015)  # the implicit steps, by training
    s_eff = lambda a: math.sqrt(-2 * math.log(a))  # noqa: E731 -- the level whose Gaussian average has amplitude a
    assert s_eff(amplitude["h/2"]) == pytest.approx(target_sigma(sigma, steps, "h/2"), rel=0.03)
    assert target_sigma(sigma, steps, "h/2") == sigma
    assert s_eff(amplitude[1.0]) > 2.5 * sigma  # c = 1 smooths at about sigma sqrt(10)
    assert target_sigma(sigma, steps, 1.0) == pytest.approx(sigma * math.sqrt(10))
    with pytest.raises(ValueError, match="penalty_scale"):
        penalty_constant("2h", 5)


def test_the_audit_table_counts_violations_and_the_control_from_the_attack_log():
    import pandas as pd

    from rsbook.papers import heat_smoothing as ch

    inf = math.inf
    rob = pd.DataFrame({"idx": [0, 20, 40, 60], "label": [1, 1, 1, 1], "clean_pred": [1, 1, 1, 0],
                        "radius": [0.2, 0.1, 0.0, 0.0],
                        "pgd_refined": [0.15, 0.5, 0.3, 0.0], "ddn_refined": [0.3, 0.25, 0.2, 0.0],
                        "pgd_audit": [0.25, inf, inf, inf], "ddn_audit": [inf, 0.05, inf, inf],
                        "pgd_audit_calls": [2, 24, 0, 0], "ddn_audit_calls": [24, 1, 0, 0]})
    table = ch.audit_table({"heat": rob, "rs": rob}, factor=3.0, audit_alpha=1e-6)
    heat, rs = table.loc[ch.LABELS["heat"]], table.loc[ch.LABELS["rs"]]
    # image 0: network wrong at 0.15 < R = 0.2; image 1: network at 0.25 (inside 3R = 0.3, not R); smoothed wrong at 0.05 < 0.1
    assert (heat["certified (r > 0)"], heat["network: violations"], heat["network: control violations"]) == (2, 1, 2)
    assert (heat["smoothed: violations"], heat["smoothed: control violations"]) == (1, 2)
    assert heat["predict calls"] == 51 and heat["expected false alarms"] == pytest.approx(51e-6)
    assert math.isnan(rs["network: violations"])  # a stochastic model's deployed classifier is the smoothed one
    # Table 5's distances: 0 for the misclassified clean image, refined otherwise
    assert list(ch.distances(rob, "pgd")) == [0.15, 0.5, 0.3, 0.0]
    assert ch.pgd_first_step(rob.assign(pgd=[0.4, 0.8, 0.4, 0.4]), 0.4) == 2
