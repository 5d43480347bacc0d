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

**Resolution.** A PGD iterate moves by up to one step (``2 eps / steps`` = 0.4 for the paper's
settings), so the first misclassified iterate overstates the distance by up to a step.
:func:`segment_boundary` refines every adversarial point's distance: it scans the segment from
the clean image to the point and bisects the first misclassified interval, to a resolution of
``length / scan / 2**bisect``. The refined point is still misclassified, so the refined
distance is still an upper bound on the distance to the nearest adversarial point. Foolbox has
no such refinement (its ``BinarySearchContrastReductionAttack`` searches toward a fixed target
image, not along a given segment), so it is written here.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["ATTACKS", "MinimalAdversary", "foolbox_attack", "adversarial_distances", "segment_boundary"]

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


def segment_boundary(classify: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, adv: torch.Tensor,
                     y: torch.Tensor, scan: int = 32, bisect: int = 10, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(distance, resolution)`` per image: the distance from ``x[i]`` to the first misclassified point
    on the segment to ``adv[i]``, found by ``scan`` equally spaced points and ``bisect`` halvings of the
    first misclassified interval. The point at that distance is misclassified by ``classify``.

    ``classify(points, rows)`` returns the class of each point; ``rows`` are the images' positions
    (so a classifier with per-image noise can use each image's own draws). It must be deterministic
    (e.g. the soft smoothed classifier with fixed noise, :class:`~rsbook.methods.soft.FixedNoiseSoft`).
    Where ``adv[i]`` equals ``x[i]`` (no adversarial point) the distance is ``inf``; where no scanned
    point, not even ``adv[i]``, is misclassified, it is ``nan`` (the caller keeps the attack's own).
    ``resolution`` is ``||adv - x|| / scan / 2**bisect``.
    """
    if scan < 1 or bisect < 0:
        raise ValueError(f"need scan >= 1 and bisect >= 0, got {scan} and {bisect}")
    delta = (adv - x).flatten(1)
    length = delta.norm(dim=1)
    active = torch.nonzero(length > 0).flatten()

    def wrong(rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # misclassified at x + t (adv - x), t per (row)
        out = []
        for j in range(0, len(rows), chunk):
            r, tj = rows[j:j + chunk], t[j:j + chunk].view(-1, *([1] * (x.dim() - 1)))
            with torch.no_grad():
                out.append(classify(x[r] + tj * (adv[r] - x[r]), r) != y[r])
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)

    dist = torch.full((len(x),), float("inf"), device=x.device)
    if len(active):
        grid = torch.arange(1, scan + 1, device=x.device, dtype=x.dtype) / scan
        hits = wrong(active.repeat_interleave(scan), grid.repeat(len(active))).view(len(active), scan)
        found = hits.any(1)
        first = torch.where(found, hits.float().argmax(1), torch.full_like(found, scan - 1, dtype=torch.long))
        lo, hi = first.to(x.dtype) / scan, (first + 1).to(x.dtype) / scan
        for _ in range(bisect):
            mid = (lo + hi) / 2
            w = wrong(active, mid)
            hi, lo = torch.where(w, mid, hi), torch.where(w, lo, mid)
        dist[active] = torch.where(found, hi * length[active], torch.full_like(hi, float("nan")))
    return dist, length / scan / 2**bisect
