"""SmoothAdv (Salman et al. 2019): adversarial training of the soft smoothed classifier.

Per batch: draw ``m`` noise samples per image once; attack the soft smoothed classifier
``G(x') = mean_i softmax(f(x' + eps_i))`` with l2 PGD (:func:`~rsbook.methods.attacks.l2_pgd`,
``steps`` steps within ``eps``, the model in eval mode); then train on the ``m`` noisy copies
of the adversarial images with the same noise, cross-entropy averaged over the copies. The
HeatSmoothing paper's CIFAR-10 baseline uses 4 PGD steps with ``eps = 0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.noise import Gaussian, Noise
from .step import Batch
from .attacks import l2_pgd

__all__ = ["SmoothAdv"]


class SmoothAdv:
    """Training step: SmoothAdv-PGD (see the module docstring). Metrics: accuracy on the noisy adversarial copies."""

    def __init__(self, noise: Noise = Gaussian(0.25), m: int = 1, eps: float = 0.5, steps: int = 4, step_size: float | None = None):
        if not isinstance(noise, Noise):
            raise TypeError(f"noise must be a Noise (e.g. Gaussian(0.25)), got {noise!r}")
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self.noise, self.m, self.eps, self.steps, self.step_size = noise, int(m), float(eps), int(steps), step_size

    def __repr__(self) -> str:
        return f"SmoothAdv({self.noise!r}, m={self.m}, eps={self.eps}, steps={self.steps})"

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        x, y, m = batch.x, batch.y, self.m
        shape = (x.shape[0] * m, *x.shape[1:])
        noise = self.noise.sample(shape, generator=generator, device=x.device)
        y_rep = y.repeat_interleave(m)

        def soft_nll(x_adv: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(model(x_adv.repeat_interleave(m, dim=0) + noise), dim=1).view(x.shape[0], m, -1).mean(1)
            return F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")

        model.eval()
        try:
            x_adv = l2_pgd(soft_nll, x, self.eps, self.steps, self.step_size)
        finally:
            model.train()
        logits = model(x_adv.repeat_interleave(m, dim=0) + noise)
        return F.cross_entropy(logits, y_rep), {"noisy_adv_acc": (logits.argmax(1) == y_rep).sum().item() / len(y_rep)}
