"""A short l2 PGD, for attacks *inside* training steps (SmoothAdv).

Attacks reported in the book's tables use a maintained library (foolbox, chapter 3); this
hand-written PGD exists because a training step needs an attack on a custom objective (the
soft smoothed classifier with the batch's own fixed noise draws), at a few steps per batch,
without a library's per-call overhead. It is tested against the closed-form optimum on a
linear model.

``l2_pgd`` maximizes ``loss_fn(x_adv)`` over ``||x_adv - x||_2 <= eps`` (per input), taking
``steps`` normalized-gradient steps of size ``step_size`` (default ``2 eps / steps``), each
followed by projection onto the ball and, optionally, onto the ``[0, 1]`` box.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["l2_pgd", "L2PGD"]


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def l2_pgd(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """``x_adv`` (detached) after ``steps`` of l2 PGD ascent on ``loss_fn`` (a scalar, e.g. a summed loss)."""
    if eps < 0 or steps < 0:
        raise ValueError(f"eps and steps must be >= 0, got {eps}, {steps}")
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()
    alpha = 2.0 * eps / steps if step_size is None else step_size
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x + delta), delta)
        with torch.no_grad():
            delta = delta + alpha * grad / _flat_norm(grad).clamp_min(1e-12)
            delta = delta * (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
            if clamp is not None:
                delta = (x + delta).clamp(*clamp) - x
    return (x + delta).detach()


class L2PGD:
    """``attack = L2PGD(model, eps, steps); x_adv = attack(x, y)``: untargeted l2 PGD on cross-entropy.

    The model is attacked in eval mode; its train/eval mode is restored afterwards.
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 10, step_size: float | None = None,
                 clamp: tuple[float, float] | None = (0.0, 1.0)):
        self.model, self.eps, self.steps, self.step_size, self.clamp = model, float(eps), int(steps), step_size, clamp

    def __repr__(self) -> str:
        return f"L2PGD(eps={self.eps}, steps={self.steps}, step_size={self.step_size or 2 * self.eps / max(self.steps, 1):g}, clamp={self.clamp})"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return l2_pgd(lambda z: F.cross_entropy(self.model(z), y, reduction="sum"), x, self.eps, self.steps, self.step_size, self.clamp)
        finally:
            self.model.train(was_training)
