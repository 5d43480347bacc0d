"""HeatSmoothing (Campbell, Finlay and Oberman, "Adversarial Boot Camp"): label-free smoothing by training.

Gaussian smoothing of a model ``f`` solves the heat equation up to time ``sigma^2 / 2``. An
implicit Euler step of length ``h = 1 / n_T`` is the variational problem (their eq. (15))

    f^{k+1} = argmin_v  E_x[ 1/2 || v(x) - f^k(x) ||^2 + c * sigma^2 / 2 * || grad_x v(x) ||^2 ],

with ``f^k`` a frozen copy of the model at the start of timestep ``k``, and no labels. After
``n_T`` timesteps the deterministic model approximates a Gaussian average of ``f``, and is
certified with one forward pass for the class (deterministic certification,
``Smooth.certify_given``).

**Which Gaussian average.** With a uniform data density the minimizer solves the
Euler-Lagrange equation ``v - f^k = c sigma^2 Laplacian(v)``: an implicit Euler step of the heat
equation that adds ``2 c sigma^2`` to the variance of the Gaussian kernel. After ``n_T``
steps the model targets the average at ``sigma * sqrt(2 n_T c)`` (:func:`target_sigma`):

* ``c = h / 2`` (``penalty_scale="h/2"``): the paper's eqs. (11)-(14), whose Euler-Lagrange
  equation (14) is ``v - f^k = (h sigma^2 / 2) Laplacian(v)`` and whose limit is eq. (6) at
  ``t = 1``: the average at ``sigma`` itself;
* ``c = h`` (``"h"``): the paper's eq. (15) as printed (its first term carries a 1/2 that
  eq. (13) lacks): ``sigma sqrt(2)``;
* ``c = 1`` (the default, Algorithm 1 as printed, which drops ``h``): ``sigma sqrt(2 n_T)``,
  0.32 for ``sigma = 0.1``, ``n_T = 5``.

A model certified at ``sigma`` should therefore be trained with ``c = h / 2``.

The Jacobian norm is estimated as in their Appendix B: ``kappa`` random ``w ~ N(0, I / K)``
(``K`` outputs), ``g = grad_x (w . v(x))``, ``d = g / ||g||`` (0 where ``g = 0``), detached, and

    || grad_x v(x) ||^2  ~=  sum_{j <= kappa} ( (w_j . v(x + delta d_j) - w_j . v(x)) / delta )^2 .

For a linear ``v(x) = W x`` each term is exactly ``|| W^T w_j ||^2`` (tested), whose expectation
is ``|| W ||_F^2 / K``.

The ImageNet variant (their eq. (10)) compares softmax outputs in the first term and adds
``N(0, sigma^2 I)`` noise to half of each batch (``imagenet_variant=True``).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from .step import Batch

__all__ = ["jacobian_norm_estimate", "HeatSmoothing", "penalty_constant", "target_sigma", "cosine_heat_flow", "l_bound", "heat_step_1d", "heat_flow_1d", "adversarial_distance_1d"]


def jacobian_norm_estimate(v: nn.Module, x: torch.Tensor, kappa: int = 10, delta: float = 0.1,
                           generator: torch.Generator | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-input estimate of ``|| grad_x v(x) ||_F^2`` by random projections and finite differences
    (see the module docstring); differentiable in ``v``'s parameters. ``out``: ``v(x)`` if already computed."""
    x = x.detach()
    out = v(x) if out is None else out
    K = out.shape[1]
    total = torch.zeros(x.shape[0], device=x.device, dtype=out.dtype)
    for _ in range(kappa):
        w = torch.randn(out.shape, generator=generator, device=x.device, dtype=out.dtype) / K**0.5
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((w * v(xg)).sum(), xg)
        norm = g.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
        d = torch.where(norm > 0, g / norm.clamp_min(1e-30), torch.zeros_like(g)).detach()
        fd = ((w * v(x + delta * d)).sum(1) - (w * out).sum(1)) / delta
        total = total + fd**2
    return total


PENALTIES = ("h/2", "h")


def penalty_constant(penalty_scale: float | str, timesteps: int) -> float:
    """``c`` of the loss: a number, or ``"h/2"`` / ``"h"`` with ``h = 1 / timesteps``.

    >>> penalty_constant("h/2", 5), penalty_constant("h", 4), penalty_constant(1, 5)
    (0.1, 0.25, 1.0)
    """
    if isinstance(penalty_scale, str):
        if penalty_scale not in PENALTIES:
            raise ValueError(f"penalty_scale must be a number or one of {PENALTIES}, got {penalty_scale!r}")
        return (0.5 if penalty_scale == "h/2" else 1.0) / timesteps
    return float(penalty_scale)


def target_sigma(sigma: float, timesteps: int, penalty_scale: float | str = 1.0) -> float:
    """The Gaussian smoothing level that ``timesteps`` heat steps with penalty ``c`` target:
    ``sigma * sqrt(2 * timesteps * c)`` (see the module docstring; exact for a uniform data density
    in the limit of many steps, where the implicit steps' kernel has this variance at every ``n_T``).

    >>> round(target_sigma(0.1, 5, "h/2"), 6), round(target_sigma(0.1, 5, 1.0), 4)
    (0.1, 0.3162)
    """
    return float(sigma) * math.sqrt(2 * timesteps * penalty_constant(penalty_scale, timesteps))


class HeatSmoothing:
    """Training step: one implicit heat-equation step per timestep (see the module docstring).

    Args:
        sigma: the smoothing level the model should emulate (0.1 on CIFAR-10 in the paper).
        epochs_per_timestep: epochs of :func:`~rsbook.training.fit.fit` per timestep ``k``;
            the frozen copy ``f^k`` is refreshed at the first epoch of each timestep.
        timesteps: ``n_T`` (5 on CIFAR-10); ``h = 1 / n_T``.
        kappa, delta: random projections and finite-difference step of the Jacobian estimate.
        penalty_scale: ``c`` in the loss: 1 (Algorithm 1), ``"h"`` (eq. (15)) or ``"h/2"`` (eqs. (11)-(14),
            which targets the average at ``sigma``; :func:`target_sigma`).
        imagenet_variant: softmax outputs in the distance term and noise on half the batch.

    The frozen copy is part of the step's state and survives a resumed run.
    """

    def __init__(self, sigma: float, epochs_per_timestep: int, timesteps: int = 5, kappa: int = 10, delta: float = 0.1,
                 penalty_scale: float | str = 1.0, imagenet_variant: bool = False):
        if not sigma > 0 or epochs_per_timestep < 1 or timesteps < 1 or kappa < 1 or not delta > 0:
            raise ValueError("need sigma > 0, epochs_per_timestep >= 1, timesteps >= 1, kappa >= 1 and delta > 0")
        self.sigma, self.epochs_per_timestep, self.timesteps = float(sigma), int(epochs_per_timestep), int(timesteps)
        self.kappa, self.delta, self.imagenet_variant = int(kappa), float(delta), bool(imagenet_variant)
        self.c = penalty_constant(penalty_scale, timesteps)
        self.frozen: nn.Module | None = None
        self._pending: dict | None = None  # the frozen copy's weights from a checkpoint

    @property
    def epochs(self) -> int:
        """The epochs of the whole run: ``timesteps * epochs_per_timestep`` (give this to ``FitConfig``)."""
        return self.timesteps * self.epochs_per_timestep

    def __repr__(self) -> str:
        return (f"HeatSmoothing(sigma={self.sigma}, timesteps={self.timesteps}, epochs_per_timestep={self.epochs_per_timestep}, "
                f"kappa={self.kappa}, delta={self.delta}, c={self.c:g}, imagenet_variant={self.imagenet_variant})")

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        """Restore a checkpointed frozen copy, then take a new one at the start of each timestep."""
        if self._pending is not None:
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)
            self.frozen.load_state_dict(self._pending)
            self._pending = None
        if epoch % self.epochs_per_timestep == 0 or self.frozen is None:
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def state_dict(self) -> dict:
        return {"frozen": None if self.frozen is None else self.frozen.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._pending = state.get("frozen")

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator):
        frozen = self.frozen
        if frozen is None:
            raise RuntimeError("HeatSmoothing has no frozen copy yet: fit() calls start_epoch before the first batch")
        x = batch.x
        with torch.no_grad():
            target = frozen(x)
        if self.imagenet_variant:  # noise on half of the batch (their eq. (10))
            half = torch.arange(x.shape[0], device=x.device) < x.shape[0] // 2
            noise = torch.randn(x.shape, generator=generator, device=x.device) * self.sigma
            x = torch.where(half.view(-1, *([1] * (x.dim() - 1))), x + noise, x)
        out = model(x)
        if self.imagenet_variant:
            match = 0.5 * (out.softmax(1) - target.softmax(1)).pow(2).sum(1)
        else:
            match = 0.5 * (out - target).pow(2).sum(1)
        penalty = jacobian_norm_estimate(model, x, self.kappa, self.delta, generator, out)
        loss = (match + self.c * self.sigma**2 / 2 * penalty).mean()
        return loss, {"match": match.mean().item(), "grad_penalty": penalty.mean().item()}


def l_bound(probs: torch.Tensor, sigma: float) -> torch.Tensor:
    """The paper's L-bound, ``sigma sqrt(pi/2) (p_(1) - p_(2))`` per row of ``probs`` (class
    probabilities of a model taken to *be* a Gaussian average at ``sigma``).

    Sound only for the exact Gaussian average, whose probabilities are ``sqrt(2/pi)/sigma``-
    Lipschitz (Salman et al., Lemma 1); for a trained HeatSmoothing model it is the paper's
    heuristic, not a certificate.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    top = probs.topk(2, dim=1).values
    return sigma * math.sqrt(math.pi / 2) * (top[:, 0] - top[:, 1])


# -- the 1-D toy of the paper's Figures 3 and 4: the same update, solved exactly on a grid ---------


def heat_step_1d(u: np.ndarray, dx: float, sigma: float, h: float, gamma: float = 0.5) -> np.ndarray:
    """One exact step of the update on a 1-D grid with uniform data density:
    ``v = argmin_v  sum 1/2 (v - u)^2 + gamma h sigma^2 / 2 (v')^2``, i.e. the linear system
    ``v - gamma h sigma^2 v'' = u`` with reflecting ends (an implicit Euler step of the heat
    equation; ``gamma = 1/2`` makes ``1/h`` steps approach the Gaussian average at ``sigma``).

    ``u`` may hold several functions as columns. Hand-written because no library solves this
    variational step; the banded solve is scipy's.
    """
    from scipy.linalg import solve_banded

    u = np.asarray(u, dtype=float)
    n = u.shape[0]
    a = gamma * h * sigma**2 / dx**2
    diag = np.full(n, 1 + 2 * a)
    diag[0] = diag[-1] = 1 + a  # reflecting (Neumann) ends
    bands = np.zeros((3, n))
    bands[0, 1:] = -a
    bands[1] = diag
    bands[2, :-1] = -a
    return solve_banded((1, 1), bands, u)


def heat_flow_1d(u0: np.ndarray, dx: float, sigma: float, timesteps: int, gamma: float = 0.5) -> list[np.ndarray]:
    """``[f^0, f^1, ..., f^{n_T}]``: ``timesteps`` steps of :func:`heat_step_1d` with ``h = 1 / n_T``."""
    out = [np.asarray(u0, dtype=float)]
    for _ in range(timesteps):
        out.append(heat_step_1d(out[-1], dx, sigma, 1.0 / timesteps, gamma))
    return out


def adversarial_distance_1d(x: np.ndarray, score: np.ndarray, x0: float) -> float:
    """The distance from ``x0`` to the nearest point where the binary classifier ``sign(score)``
    changes (linear interpolation between grid points); ``inf`` if it never changes."""
    s = np.interp(x0, x, score)
    crossings = []
    for i in np.nonzero(np.sign(score[:-1]) * np.sign(score[1:]) <= 0)[0]:
        if score[i] == score[i + 1]:
            continue
        t = score[i] / (score[i] - score[i + 1])
        crossings.append(x[i] + t * (x[i + 1] - x[i]))
    if s == 0:
        return 0.0
    return float(min(abs(c - x0) for c in crossings)) if crossings else math.inf


class _Cosine(nn.Module):
    """``v(x) = a cos(x) + b sin(x) + c`` on 1-D inputs: a model whose heat flow has a closed form."""

    def __init__(self):
        super().__init__()
        self.coef = nn.Parameter(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.coef[0] * torch.cos(x) + self.coef[1] * torch.sin(x) + self.coef[2]).view(-1, 1)


def cosine_heat_flow(sigma: float, timesteps: int, penalty_scale: float | str, points: int = 16384, seed: int = 0) -> float:
    """Train :class:`HeatSmoothing`'s own loss (its random-projection penalty included, ``kappa = K = 1``)
    from ``f^0 = cos`` on ``points`` inputs spread uniformly over a period, minimizing each timestep's
    loss to convergence (L-BFGS, the same projections at every evaluation); returns the final
    amplitude of ``cos``.

    The closed forms it is checked against: one exact step maps ``cos`` to ``cos / (1 + c sigma^2)``
    (the Euler-Lagrange equation ``v - f = c sigma^2 v''``), and the Gaussian average of ``cos`` at
    level ``s`` is ``exp(-s^2 / 2) cos``; so the amplitude names the smoothing level reached.
    """
    step = HeatSmoothing(sigma, epochs_per_timestep=1, timesteps=timesteps, kappa=1, delta=1e-3, penalty_scale=penalty_scale)
    model = _Cosine()
    x = torch.linspace(0, 2 * math.pi, points + 1, dtype=torch.float64)[:-1].view(-1, 1)
    batch = Batch(x, torch.zeros(len(x), dtype=torch.long), torch.arange(len(x)))
    for k in range(timesteps):
        step.start_epoch(model, k)
        opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss, _ = step(model, batch, torch.Generator().manual_seed(seed + k))
            loss.backward()
            return loss

        opt.step(closure)
    return float(model.coef[0].detach())
