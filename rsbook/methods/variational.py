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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.noise import Gaussian
from .step import Batch
from .augment import perturb
from .soft import SoftSmoothed, noisy_copies

__all__ = ["gaussian_kl", "SelectorStep"]


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
    """

    def __init__(self, classifier: nn.Module, sigma_a: float, sigma_t: float, n_f: int = 10, tau: float = 1.0,
                 lam: float | None = None, n_h: int = 0, sigma_m: float = 0.25):
        if not (sigma_t > 0 and sigma_a >= 0) or (lam is not None and not 0 <= lam <= 1) or n_h < 0:
            raise ValueError("need sigma_t > 0, sigma_a >= 0, lam in [0, 1] (or None) and n_h >= 0")
        self.classifier = classifier.eval().requires_grad_(False)
        self.soft = SoftSmoothed(self.classifier, Gaussian(sigma_t), m=n_f, tau=tau)
        self.sigma_a, self.sigma_t, self.lam, self.n_h, self.sigma_m = float(sigma_a), float(sigma_t), lam, int(n_h), float(sigma_m)

    def __repr__(self) -> str:
        lam = "U(0, 1)" if self.lam is None else self.lam
        return (f"SelectorStep(sigma_a={self.sigma_a}, sigma_t={self.sigma_t}, n_f={self.soft.m}, lam={lam}, "
                f"n_h={self.n_h}, sigma_m={self.sigma_m})")

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
        kl = gaussian_kl(sigma_s, self.sigma_t, x[0].numel())
        loss = ((1 - lam_value) * ce + lam_value * kl).mean()
        return loss, {"sigma_s": sigma_s.mean().item(), "ce": ce.mean().item()}
