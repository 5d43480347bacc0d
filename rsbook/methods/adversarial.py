"""Adversarial training (Madry et al. 2018) in the l2 norm: train on l2-PGD examples of each batch.

Per batch: attack the model (eval mode) with :func:`~rsbook.methods.attacks.l2_pgd` on the
cross-entropy, ``steps`` steps within ``eps`` (step ``2 eps / steps``, projected onto [0, 1]),
then take the cross-entropy at the adversarial images. HeatSmoothing's Table 4 starts from
such a model (Madry's ImageNet model at ``eps = 3``); on CIFAR-10 the book uses ``eps = 0.5``,
the usual CIFAR-10 l2 radius, ``3 sqrt(3072 / 150528) = 0.43`` rounded up (the radius scaled
by the square root of the input dimension).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .step import Batch
from .attacks import l2_pgd

__all__ = ["PGDAdversarialTraining"]


class PGDAdversarialTraining:
    """Training step: l2-PGD adversarial training (see the module docstring). Metric: accuracy on the adversarial batch."""

    def __init__(self, eps: float = 0.5, steps: int = 7, step_size: float | None = None):
        if not eps > 0 or steps < 1:
            raise ValueError(f"need eps > 0 and steps >= 1, got eps={eps}, steps={steps}")
        self.eps, self.steps, self.step_size = float(eps), int(steps), step_size

    def __repr__(self) -> str:
        return f"PGDAdversarialTraining(eps={self.eps}, steps={self.steps})"

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        x, y = batch.x, batch.y
        model.eval()
        try:
            x_adv = l2_pgd(lambda z: F.cross_entropy(model(z), y, reduction="sum"), x, self.eps, self.steps, self.step_size)
        finally:
            model.train()
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {"adv_acc": (logits.argmax(1) == y).float().mean().item()}
