"""Adversarial distances with foolbox: the smallest l2 perturbation an attack finds that changes the class.

The HeatSmoothing paper runs l2 PGD and DDN for 20 steps with ``eps = 4`` "to force top-1
misclassification" and reports the size of the perturbation that first misclassifies. Foolbox
(:class:`foolbox.attacks.L2PGD`, :class:`foolbox.attacks.DDNAttack`) runs the attacks; the
model it attacks is wrapped in :class:`MinimalAdversary`, which watches every input the attack
evaluates and keeps, per image, the closest one the model misclassifies. For DDN that is
exactly DDN's own best adversarial; for PGD it is the first misclassified iterate on the path
(the iterates grow by at most one step, ``2 eps / steps``, each). An image misclassified
unperturbed has distance 0; one never misclassified has distance ``inf``.

The attacked model may be stochastic (the soft smoothed classifier,
:class:`~rsbook.methods.soft.SoftSmoothedLogits`); "misclassified" then means by that call's
noise draws, and the deployed Monte-Carlo classifier is checked separately at the point found.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["ATTACKS", "MinimalAdversary", "foolbox_attack", "adversarial_distances"]

ATTACKS = ("pgd", "ddn")


class MinimalAdversary(nn.Module):
    """``model`` unchanged, recording the closest misclassified input per image (see the module doc).

    Call :meth:`start` with the clean batch and labels before the attack; afterwards ``distance``
    (``inf`` where none was found) and ``adversarial`` (the clean image there) hold the result.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.x0: torch.Tensor | None = None

    def start(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x0, self.y = x.detach(), y
        self.distance = torch.full((x.shape[0],), float("inf"), device=x.device)
        self.adversarial = x.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.x0 is not None and x.shape == self.x0.shape:
            with torch.no_grad():
                d = (x.detach() - self.x0).flatten(1).norm(dim=1)
                better = (out.argmax(1) != self.y) & (d < self.distance)
                self.distance = torch.where(better, d, self.distance)
                self.adversarial[better] = x.detach()[better]
        return out


def foolbox_attack(name: str, eps: float = 4.0, steps: int = 20):
    """The paper's attack ``name`` in foolbox: l2 PGD from the clean image with step ``2 eps / steps``,
    or DDN (initial radius 1, foolbox's default gamma 0.05), ``steps`` steps each."""
    import foolbox as fb

    if name == "pgd":
        return fb.attacks.L2PGD(abs_stepsize=2 * eps / steps, steps=steps, random_start=False)
    if name == "ddn":
        return fb.attacks.DDNAttack(init_epsilon=1.0, steps=steps)
    raise ValueError(f"attack must be one of {ATTACKS}, got {name!r}")


def adversarial_distances(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, eps: float = 4.0,
                          steps: int = 20, batch_size: int = 100,
                          on_batch: Callable[[slice], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(distance, adversarial)`` per image: the l2 distance to the closest misclassified input that
    foolbox's attack ``name`` evaluates within ``eps`` (``inf`` if none), and that input.
    ``on_batch(rows)`` is called before each batch of ``x[rows]`` is attacked (e.g. to give a
    stochastic model that batch's per-image generators)."""
    import foolbox as fb

    attack, watched = foolbox_attack(name, eps, steps), MinimalAdversary(model).eval()
    fmodel = fb.PyTorchModel(watched, bounds=(0, 1), device=x.device)
    dist, adv = [], []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if on_batch is not None:
            on_batch(slice(i, i + batch_size))
        watched.start(xb, yb)
        attack(fmodel, xb, yb, epsilons=eps)
        dist.append(watched.distance.clone())
        adv.append(watched.adversarial.clone())
    watched.x0 = None
    return torch.cat(dist), torch.cat(adv)
