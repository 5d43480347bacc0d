"""Sample-wise randomized smoothing (paper 2, as reconstructed in chapter 2): a noise level per input.

* :func:`soft_radius`: MACER's soft certified radius ``sigma/2 (Phi^-1(p_1) - Phi^-1(p_2))`` of softmax
  averages over noisy copies, the criterion that picks each sample's level.
* :func:`choose_sigmas`: for each image, the grid level with the largest soft radius, from ``k``
  noisy copies per level drawn through the engine's ``values`` reduction. The draws come from the
  caller's generators (the chapter uses the ``selector`` stream), never from the certificate's.
* **Transductive allocation.** Cohen's certificate at a point's own level ``sigma_j`` certifies the
  classifier smoothed at ``sigma_j``; a perturbed input near ``x_j`` is only smoothed at ``sigma_j``
  if the defender knows it belongs to ``x_j``. For a fixed test set the defender can: give each
  non-abstaining point a ball ``B(x_j, rho_j)``, ``rho_j <= R_j``, so that balls of *conflicting*
  points never overlap (``rho_i + rho_k <= ||x_i - x_k||``), and classify an input in ball ``j``
  as the classifier smoothed at ``sigma_j`` does. Every input within ``rho_j`` of ``x_j`` is then
  classified ``c_j``. Two points conflict when their levels differ (the book's notes, Sukenik et
  al.); ``conflict="sigma-and-class"`` is the weaker condition that suffices: two balls at
  different levels may overlap when their certified classes agree, since an input in both is
  classified ``c_i = c_k`` whichever level is used (at one level, certified balls of two classes
  cannot overlap at all).

  * :func:`allocate`: the radii maximizing ``sum rho_j`` by a linear program (scipy's
    ``linprog``, HiGHS) over the constraining pairs only (``R_i + R_k > ||x_i - x_k||``);
  * :func:`memory_rule`: the order-dependent greedy rule in the same constraints (DDRS's memory
    step restated for them): each point in turn takes what its predecessors left;
  * :func:`ddrs_memory`: DDRS's memory step as its public code states it (class conflicts only; a
    point inside a stored ball of another class takes that class).

  Either holds for perturbations of the fixed test set only (transductive), not for a new input.

No maintained library does the allocation (``ddsmoothing`` keeps its memory step inside its
certification script), hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linprog
from scipy.sparse import csr_matrix
from scipy.stats import norm

from ..core.engine import Engine, Item
from ..core.noise import Gaussian
from ..core.streams import stream

__all__ = ["soft_radius", "SigmaChoice", "selection_generators", "choose_sigmas", "CONFLICTS", "conflicts", "Allocation", "allocate", "memory_rule",
           "ddrs_memory", "ddrs_sigmas", "pairwise_distances"]

CONFLICTS = ("sigma", "sigma-and-class")
CLAMP = (0.02, 0.98)  # DDRS's clamp of the two softmax averages (keeps Phi^-1 finite)


def soft_radius(probs: torch.Tensor | np.ndarray, sigma: float, label: int | None = None,
                clamp: tuple[float, float] = CLAMP) -> float:
    """MACER's soft radius of softmax averages ``probs`` (``(K,)``) at level ``sigma``.

    ``sigma/2 (Phi^-1(p_1) - Phi^-1(p_2))`` with ``p_1 >= p_2`` the two largest averages, clamped to
    ``clamp``. With ``label``: 0 unless ``label`` is the top class (MACER counts only correct samples).
    """
    p = np.asarray(probs, dtype=float).reshape(-1)
    top = np.argsort(p)[::-1]
    if label is not None and int(top[0]) != int(label):
        return 0.0
    p1, p2 = np.clip(p[top[0]], *clamp), np.clip(p[top[1]], *clamp)
    return float(sigma / 2 * (norm.ppf(p1) - norm.ppf(p2)))


@dataclass(frozen=True)
class SigmaChoice:
    """One image's choice: the grid level with the largest soft radius, and every level's soft radius."""

    sigma: float
    soft: tuple[float, ...]


def selection_generators(seed: int, indices: Sequence[int], levels: int, device: torch.device | str) -> list[list[torch.Generator]]:
    """``[i][j]``: image ``indices[i]``'s generator at the ``j``-th level, its ``selector`` stream with ``k = j``
    (:mod:`rsbook.core.streams`): disjoint from its ``certify`` stream, so the choice never sees the
    certificate's draws."""
    return [[stream("selector", seed, int(i), device, k=j) for j in range(levels)] for i in indices]


def choose_sigmas(model: torch.nn.Module, images: Sequence[torch.Tensor], grid: Sequence[float], k: int,
                  generators: Sequence[Sequence[torch.Generator]], labels: Sequence[int] | None = None,
                  batch_size: int | None = None) -> list[SigmaChoice]:
    """Per image, the level of ``grid`` maximizing :func:`soft_radius` over ``k`` noisy copies per level.

    ``generators[i][j]`` draws image ``i``'s copies at ``grid[j]``; ``labels`` (training images)
    make a wrong top class score 0. Ties go to the smallest level (an image every level misclassifies
    keeps ``grid[0]``). All levels of all images share the engine's forward batches.
    """
    grid = [float(s) for s in grid]
    if not grid or min(grid) <= 0 or k < 1:
        raise ValueError(f"need a non-empty grid of positive levels and k >= 1, got grid={grid}, k={k}")
    if len(generators) != len(images) or any(len(g) != len(grid) for g in generators):
        raise ValueError("give one generator per image and grid level: generators[i][j]")
    engine = Engine(model, None, Gaussian(grid[0]))
    items = (Item((i, j), x, generators[i][j], Gaussian(s)) for i, x in enumerate(images) for j, s in enumerate(grid))
    soft = np.zeros((len(images), len(grid)))
    for (i, j), vals in engine.values(items, (k,), batch_size, planned=k * len(grid) * len(images)):
        probs = torch.softmax(vals[0].double(), dim=1).mean(0)
        soft[i, j] = soft_radius(probs, grid[j], None if labels is None else int(labels[i]))
    best = soft.argmax(1)  # the first maximum: the smallest level on ties
    return [SigmaChoice(grid[b], tuple(float(v) for v in row)) for b, row in zip(best, soft)]


def pairwise_distances(points: torch.Tensor | np.ndarray) -> np.ndarray:
    """The ``(N, N)`` l2 distances of ``points`` (``(N, ...)``, flattened), in float64."""
    x = torch.as_tensor(points).reshape(len(points), -1).double()
    return torch.cdist(x, x).numpy()


def conflicts(sigmas: np.ndarray, classes: np.ndarray | None, conflict: str) -> np.ndarray:
    """``(N, N)`` booleans: which pairs may not overlap (see the module docstring)."""
    if conflict not in CONFLICTS:
        raise ValueError(f"conflict must be one of {CONFLICTS}, got {conflict!r}")
    s = np.asarray(sigmas, dtype=float)
    out = s[:, None] != s[None, :]
    if conflict == "sigma-and-class":
        if classes is None:
            raise ValueError("conflict='sigma-and-class' needs the certified classes")
        c = np.asarray(classes)
        out &= c[:, None] != c[None, :]
    return out


@dataclass(frozen=True)
class Allocation:
    """Allocated radii ``rho`` and the certified radii ``min(R, rho)``, with what the allocation costs."""

    radius: np.ndarray  # min(R_j, rho_j): the transductive certified radius
    cohen: np.ndarray  # R_j, Cohen's radius at the point's own level (0: abstained)
    pairs: int  # constraining pairs (R_i + R_k > d_ik among conflicting pairs)

    @property
    def binding(self) -> np.ndarray:
        """Points whose certified radius the allocation cut below Cohen's."""
        return self.radius < self.cohen * (1 - 1e-6)

    @property
    def lost(self) -> float:
        """Total radius given up, ``sum (R_j - radius_j)``."""
        return float((self.cohen - self.radius).sum())


def _constraining(dist: np.ndarray, radii: np.ndarray, bad: np.ndarray) -> np.ndarray:
    i, k = np.triu_indices(len(radii), 1)
    keep = bad[i, k] & (radii[i] > 0) & (radii[k] > 0) & (radii[i] + radii[k] > dist[i, k])
    return np.stack([i[keep], k[keep]], 1)


def _check(dist: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist, radii = np.asarray(dist, dtype=float), np.asarray(radii, dtype=float)
    if dist.shape != (len(radii), len(radii)) or (radii < 0).any() or not np.isfinite(radii).all():
        raise ValueError("need an (N, N) distance matrix and N finite radii >= 0 (0 for an abstention)")
    return dist, radii


def allocate(dist: np.ndarray, sigmas: np.ndarray, radii: np.ndarray, classes: np.ndarray | None = None,
             conflict: str = "sigma") -> Allocation:
    """The largest total of radii ``rho_j <= R_j`` with ``rho_i + rho_k <= d_ik`` for every conflicting pair.

    A linear program (scipy ``linprog``, HiGHS) over the constraining pairs only; a pair whose
    Cohen radii already fit, ``R_i + R_k <= d_ik``, cannot bind. ``radii``: Cohen's radius per
    point (0 where it abstains). A pair the solver leaves over by its tolerance is cut back by the
    excess (both halves), so no allocated pair overlaps.
    """
    dist, radii = _check(dist, radii)
    pairs = _constraining(dist, radii, conflicts(sigmas, classes, conflict))
    if not len(pairs):
        return Allocation(radii.copy(), radii, 0)
    free = np.unique(pairs)  # points in some constraining pair: the LP's variables
    pos = {int(p): j for j, p in enumerate(free)}
    rows = np.repeat(np.arange(len(pairs)), 2)
    cols = np.array([pos[int(p)] for p in pairs.reshape(-1)])
    a = csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(pairs), len(free)))
    res = linprog(-np.ones(len(free)), A_ub=a, b_ub=dist[pairs[:, 0], pairs[:, 1]], bounds=list(zip(np.zeros(len(free)), radii[free])),
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"the allocation LP did not solve: {res.message}")
    out = radii.copy()
    out[free] = np.clip(res.x, 0.0, radii[free])
    for i, k in pairs:  # shrinking only lowers other pairs' sums, so one pass repairs every excess
        excess = out[i] + out[k] - dist[i, k] + 1e-12
        if excess > 1e-12:
            cut = min(out[i], excess / 2)
            out[i], out[k] = out[i] - cut, max(0.0, out[k] - (excess - cut))
    return Allocation(out, radii, len(pairs))


def memory_rule(dist: np.ndarray, sigmas: np.ndarray, radii: np.ndarray, classes: np.ndarray | None = None,
                conflict: str = "sigma", order: Sequence[int] | None = None) -> Allocation:
    """The order-dependent greedy rule in :func:`allocate`'s constraints: in ``order`` (default: the data
    set's), each point takes ``rho_j = min(R_j, min_i (d_ij - rho_i), min_k d_jk)`` over the conflicting
    points ``i`` already placed and ``k`` still to come (so that no later point ends inside its ball).
    Feasible for the LP, so never above its total. Unlike DDRS's online memory (:func:`ddrs_memory`) it
    needs the whole test set in advance, as the LP does."""
    dist, radii = _check(dist, radii)
    bad = conflicts(sigmas, classes, conflict) & (radii[:, None] > 0) & (radii[None, :] > 0)
    order = np.arange(len(radii)) if order is None else np.asarray(order)
    rho = np.zeros_like(radii)
    done = np.zeros(len(radii), dtype=bool)
    for j in order:
        r = radii[j]
        if r > 0:
            others = bad[j]
            past, future = others & done, others & ~done
            if past.any():
                r = min(r, float((dist[j, past] - rho[past]).min()))
            if future.any():
                r = min(r, float(dist[j, future].min()))
        rho[j] = max(0.0, r)
        done[j] = True
    return Allocation(rho, radii, len(_constraining(dist, radii, bad)))


def ddrs_memory(dist: np.ndarray, classes: np.ndarray, radii: np.ndarray,
                order: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DDRS's memory step as its public code states it: ``(classes, radii)`` after processing ``order``.

    Each point in turn, with radius ``r``, overlaps a stored point ``i`` when ``d_i < r_i + r``;
    among the overlaps of another class, ``m = min(d_i - r_i)``; if ``m < 0`` (it lies inside a stored
    ball) it takes that ball's class; its radius becomes ``|m|``. Then it is stored. Abstentions
    (radius 0, class -1) are stored with radius 0.
    """
    dist, radii = _check(dist, radii)
    cls, out = np.asarray(classes).copy(), radii.copy()
    order = np.arange(len(radii)) if order is None else np.asarray(order)
    stored: list[int] = []
    for j in order:
        if out[j] > 0 and stored:
            prev = np.array(stored)
            other = prev[(cls[prev] != cls[j]) & (cls[prev] >= 0) & (dist[j, prev] < out[prev] + out[j])]
            if len(other):
                gaps = dist[j, other] - out[other]
                m = int(np.argmin(gaps))
                if gaps[m] < 0:
                    cls[j] = cls[other[m]]
                out[j] = abs(float(gaps[m]))
        stored.append(int(j))
    return cls, out


def ddrs_sigmas(model: torch.nn.Module, images: torch.Tensor, sigma0: float, lr: float, iterations: int, samples: int,
                seed: int, batch_size: int = 50, device: torch.device | str = "cpu") -> np.ndarray:
    """DDRS's per-input level (Alfarra et al.): gradient ascent on ``sigma`` of the soft radius of the
    softmax averages over ``samples`` noisy copies, from ``sigma0``, by the ``ddsmoothing`` library's
    ``optimize_isotropic_dds`` (isotropic, l2).

    The library draws its noise from torch's global generator and takes no generator: each batch of
    ``batch_size`` images runs under ``torch.random.fork_rng`` seeded by ``(seed, batch)``, so the
    result is reproducible and the global generator is left as it was. Those draws are not the
    ``certify`` stream's.
    """
    from ddsmoothing.certificate import L2Certificate
    from ddsmoothing.optimization import optimize_isotropic_dds

    probs = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).to(device).eval()
    flags = [p.requires_grad for p in model.parameters()]
    out = []
    try:
        for b, start in enumerate(range(0, len(images), batch_size)):
            x = images[start:start + batch_size].to(device)
            devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(seed) * 1_000_003 + b)
                cert = L2Certificate(len(x), device=str(device))
                sig = optimize_isotropic_dds(probs, x, cert, lr, torch.full((len(x),), float(sigma0), device=device), iterations,
                                             samples, device=str(device))
            out.append(sig.detach().cpu().double().numpy())
    finally:  # the library switches gradients on for every parameter when it returns
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return np.concatenate(out) if out else np.zeros(0)
