"""Variational randomized smoothing (paper 4): a network that picks the noise level per input.

A selector ``h(x_in, sigma_a, lam) -> sigma_s > 0`` (one level per input) is trained with the
base classifier ``f`` frozen, through the soft smoothed classifier ``g_s`` (eq. (5)) at each
input's own ``sigma_s``, with the loss (eq. (7))

    L = (1 - lam) CE(g_s(x), y) + lam KL(N(0, sigma_s^2 I_d) || N(0, sigma_t^2 I_d)),
    KL = d [ 1/2 (sigma_s / sigma_t)^2 - 1/2 - log(sigma_s / sigma_t) ]      (eq. (6)),

and, for *universal lambda training*, ``lam ~ U(0, 1)`` drawn per batch (Algorithm 1); with
conditional meta learning ``lam`` (and ``sigma_a``) are inputs of ``h``. For dual smoothing
(``g_v^*``) the selector's output is itself median-smoothed: ``sigma_s`` is the median of
``n_h`` outputs ``h(x + eps_m)``, ``eps_m ~ N(0, sigma_m^2 I)``.

The paper gives no code; what it leaves open is this book's reconstruction and is labelled so:
the selector's input for mono smoothing is ``x + eps`` with ``eps ~ N(0, sigma_a^2 I)`` (its
Fig. 3 feeds "x + eps"), and the median over ``n_h`` draws is taken per input.

**The KL's scale.** Eq. (6) as printed is the KL of the whole ``d``-dimensional Gaussians, ``d``
times the per-dimension KL. In ``d = 3,072`` that term outweighs the cross-entropy for every
``lam`` above about ``1e-3``, so every selector trained with it outputs ``sigma_t``. The paper's own
Table 2 (selector outputs near 0.1 at ``lam = 0.2`` for ``sigma_t = 0.24``) is reachable only with the
per-dimension KL. ``kl="total"`` is eq. (6) as printed; ``kl="per-dimension"`` divides it by ``d``
(this book's reconstruction, used in chapter 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.noise import Gaussian
from .step import Batch
from .augment import perturb
from .soft import SoftSmoothed, noisy_copies

__all__ = ["KL_SCALES", "gaussian_kl", "SelectorStep", "VariationalLogits", "pgd_budget"]


KL_SCALES = ("total", "per-dimension")


def gaussian_kl(sigma_s: torch.Tensor, sigma_t: float, d: int) -> torch.Tensor:
    """``KL(N(0, sigma_s^2 I_d) || N(0, sigma_t^2 I_d)) = d [r^2/2 - 1/2 - log r]``, ``r = sigma_s / sigma_t`` (eq. (6))."""
    r = sigma_s / sigma_t
    return d * (0.5 * r**2 - 0.5 - torch.log(r))


class SelectorStep:
    """Training step for a selector ``h`` (the model being fitted); ``classifier`` stays frozen.

    Args:
        classifier: the base classifier ``f``.
        sigma_a: the classifier's training noise level, an input of ``h``.
        sigma_t: the KL target level (the paper uses ``2 sigma_a``).
        n_f: noise draws of the soft smoothed classifier (``N_f^tr = 10``).
        tau: its softmax temperature.
        lam: a fixed regularization factor, or ``None`` for universal ``lam ~ U(0, 1)`` per batch.
        n_h, sigma_m: dual smoothing: the median of ``n_h`` selector outputs at noise
            ``sigma_m`` (``n_h = 0``: mono smoothing, ``h(x + N(0, sigma_a^2))``).
        kl: ``"total"`` (eq. (6) as printed) or ``"per-dimension"`` (divided by ``d``; see the module docstring).
    """

    def __init__(self, classifier: nn.Module, sigma_a: float, sigma_t: float, n_f: int = 10, tau: float = 1.0,
                 lam: float | None = None, n_h: int = 0, sigma_m: float = 0.25, kl: str = "total"):
        if not (sigma_t > 0 and sigma_a >= 0) or (lam is not None and not 0 <= lam <= 1) or n_h < 0:
            raise ValueError("need sigma_t > 0, sigma_a >= 0, lam in [0, 1] (or None) and n_h >= 0")
        if kl not in KL_SCALES:
            raise ValueError(f"kl must be one of {KL_SCALES}, got {kl!r}")
        self.kl = kl
        self.classifier = classifier.eval().requires_grad_(False)
        self.soft = SoftSmoothed(self.classifier, Gaussian(sigma_t), m=n_f, tau=tau)
        self.sigma_a, self.sigma_t, self.lam, self.n_h, self.sigma_m = float(sigma_a), float(sigma_t), lam, int(n_h), float(sigma_m)

    def __repr__(self) -> str:
        lam = "U(0, 1)" if self.lam is None else self.lam
        return (f"SelectorStep(sigma_a={self.sigma_a}, sigma_t={self.sigma_t}, n_f={self.soft.m}, lam={lam}, "
                f"n_h={self.n_h}, sigma_m={self.sigma_m}, kl={self.kl!r})")

    def select(self, h: nn.Module, x: torch.Tensor, lam: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``sigma_s`` per input: ``h`` on the noisy input (median of ``n_h`` for dual smoothing)."""
        b = x.shape[0]
        sig_a = torch.full((b,), self.sigma_a, device=x.device)
        if self.n_h:
            noisy = noisy_copies(x, self.n_h, Gaussian(self.sigma_m), generator)
            out = h(noisy, sig_a.repeat_interleave(self.n_h), lam.repeat_interleave(self.n_h)).reshape(b, self.n_h)
            # contiguous: torch 2.13's median reads garbage from a stride-0 (expanded) view
            return out.contiguous().median(dim=1).values
        return h(perturb(x, Gaussian(1.0), generator, self.sigma_a), sig_a, lam).reshape(b)

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        x, y = batch.x, batch.y
        lam_value = float(torch.rand((), generator=generator, device=generator.device)) if self.lam is None else self.lam
        lam = torch.full((x.shape[0],), lam_value, device=x.device)
        sigma_s = self.select(model, x, lam, generator)
        if not bool((sigma_s > 0).all()):
            raise ValueError("the selector must output positive noise levels (end it with e.g. softplus)")
        self.soft.generator = generator
        ce = F.nll_loss(self.soft.log_prob(x, sigma_s), y, reduction="none")
        kl = gaussian_kl(sigma_s, self.sigma_t, x[0].numel() if self.kl == "total" else 1)
        loss = ((1 - lam_value) * ce + lam_value * kl).mean()
        return loss, {"sigma_s": sigma_s.mean().item(), "ce": ce.mean().item()}


class VariationalLogits(nn.Module):
    """``log g_s(x)`` at the selector's level, as logits for foolbox (the paper's *stronger* attack).

    The noise level is ``step.select(selector, x, lam)`` -- mono: ``h(x + N(0, sigma_a^2))``; dual:
    the median of ``n_h`` draws at ``sigma_m`` -- clipped to ``clip``, and the soft smoothed
    classifier averages ``step.soft.m`` copies at that level. Gradients flow through the selector
    (and through the median's element), so the attack knows ``h``, ``sigma_a``, ``sigma_t`` and
    ``lam``. Every call draws fresh noise from ``generator``.
    """

    def __init__(self, step: SelectorStep, selector: nn.Module, lam: float, clip: tuple[float, float] | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.step, self.selector, self.lam, self.clip, self.generator = step, selector, float(lam), clip, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = torch.full((x.shape[0],), self.lam, device=x.device)
        sigma = self.step.select(self.selector, x, lam, self.generator)
        if self.clip is not None:
            sigma = sigma.clamp(*self.clip)
        self.step.soft.generator = self.generator
        return self.step.soft.log_prob(x, sigma)


def pgd_budget(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, batch_size: int = 50) -> torch.Tensor:
    """foolbox's l2 PGD at budget ``eps``: ``steps`` steps of ``2.5 eps / steps`` from the clean input (no
    random start, so that the only randomness is the model's own generator), projected to the ball and
    to [0, 1]; returns the perturbed inputs."""
    import foolbox as fb

    attack = fb.attacks.L2PGD(abs_stepsize=2.5 * eps / steps, steps=steps, random_start=False)
    fmodel = fb.PyTorchModel(model.eval(), bounds=(0, 1), device=x.device)
    out = []
    for i in range(0, x.shape[0], batch_size):
        _, clipped, _ = attack(fmodel, x[i:i + batch_size], y[i:i + batch_size], epsilons=eps)
        out.append(clipped.detach())
    return torch.cat(out)
