"""The input-dependent certificate: Gaussian smoothing whose sigma may change with the input.

Setting (NOTES.md, "The input-dependent certificate"). The smoothed classifier at ``x'`` uses
``N(x', sigma(x')^2 I_d)``, and all that is known of ``sigma(x')`` for ``||x' - x|| <= R`` is an
interval ``[lo, hi]`` (for dual smoothing: the median-smoothing bounds of the selector after
clipping; for a sigma rule of bounded semi-elasticity: ``[sigma_0 e^{-rR}, sigma_0 e^{rR}]``).
The class probability is estimated once, at ``x`` under the fixed ``P = N(x, sigma_0^2 I)``:
``P(A) >= p`` for the decision set ``A`` of class ``c_A``. For a neighbour at distance ``r`` smoothed
at ``sigma_1``, ``Q = N(x + delta, sigma_1^2 I)``, the worst case of ``Q(A)`` over every set with
``P(A) >= p`` is, by the Neyman-Pearson lemma, attained by a likelihood-ratio level set:

* ``sigma_1 = sigma_0``: a half-space, ``Phi(Phi^-1(p) - r / sigma_0)`` (Cohen et al.);
* ``sigma_1 > sigma_0``: a ball ``||z - c|| <= t`` with ``c = -delta sigma_0^2 / (sigma_1^2 - sigma_0^2)``;
* ``sigma_1 < sigma_0``: the complement of such a ball, ``c = delta sigma_0^2 / (sigma_0^2 - sigma_1^2)``;

and its probabilities under ``P`` and ``Q`` are non-central chi-square CDFs with ``d`` degrees of
freedom (:func:`worst_case`). ``c_A`` is certified at radius ``R`` when that worst case exceeds
1/2 for every ``r <= R`` and every ``sigma_1`` in ``[lo, hi]``.

Covering the continuum. Whether the worst case over an interval is attained at an endpoint is
not known in general, so :func:`varying_radius` never assumes it. It evaluates a grid of nodes
in ``(r, sigma_1)`` and bounds every cell between nodes by total variation: for any feasible set,
``|Q(A) - Q'(A)| <= TV(Q, Q')``, so the worst case at any point of a cell is at least the worst
case at a node minus the TV distance to that node. For two scales with one mean the TV distance is
a difference of central chi-square CDFs (:func:`scale_tv`); for two means at one scale it is
``2 Phi(|r - r'| / (2 sigma)) - 1``. Nodes within a relative ``1e-5`` of ``sigma_0`` (where the
ball's centre runs off to infinity and scipy's ``ncx2`` loses accuracy) are bounded from the
half-space value at ``sigma_0`` by the same TV argument. The returned radius is therefore a
guarantee; it is smaller than the exact one by the grid's slack (at most ``tol`` in probability)
and the bisection's resolution.

Why it is small in high dimension (Sukenik et al. 2022): under ``P`` the norm ``||z - x||`` concentrates
at ``sigma_0 sqrt(d)``, so a ball (or shell) of probability ``p`` under ``sigma_0`` has little
probability under a slightly different scale. In ``d = 3,072`` with ``p = 0.99`` at ``sigma_0 = 0.25``
the worst case at ``r = 0`` is 0.22 for ``sigma_1 = 0.26`` and 0.94 for ``sigma_1 = 0.2525``.

Hand-written because no maintained library computes it; the probabilities are scipy's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2, ncx2, norm

__all__ = ["worst_case", "scale_tv", "shift_tv", "VaryingRadius", "varying_radius"]

_NEAR = 1e-5  # |sigma_1 / sigma_0 - 1| below this: bound from the half-space value at sigma_0 (see module docstring)


def _check(p, sigma0, d) -> None:
    if not (0 < sigma0 < math.inf) or d < 1:
        raise ValueError(f"need sigma0 > 0 and d >= 1, got sigma0={sigma0}, d={d}")
    if not 0 <= float(np.min(p)) <= float(np.max(p)) <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")


def _exact(p: float, sigma0: float, sigma1: np.ndarray, r: np.ndarray, d: int) -> np.ndarray:
    """The Neyman-Pearson worst case for ``sigma1 != sigma0`` (1-D arrays of one length)."""
    gap = sigma1**2 - sigma0**2
    lam_p = (r * sigma0 / gap) ** 2  # ||c||^2 / sigma0^2
    lam_q = (r * sigma1 / gap) ** 2  # ||delta - c||^2 / sigma1^2
    out = np.empty(sigma1.shape)
    ball = gap > 0  # sigma1 > sigma0: the worst set is a ball; below, a ball's complement
    with np.errstate(all="ignore"):
        if ball.any():
            t = ncx2.ppf(p, d, lam_p[ball]) * sigma0**2
            out[ball] = ncx2.cdf(t / sigma1[ball] ** 2, d, lam_q[ball])
        if (~ball).any():
            t = ncx2.isf(p, d, lam_p[~ball]) * sigma0**2
            out[~ball] = ncx2.sf(t / sigma1[~ball] ** 2, d, lam_q[~ball])
    return out


def worst_case(p: float, sigma0: float, sigma1: np.ndarray | float, r: np.ndarray | float, d: int) -> np.ndarray:
    """``min Q(A)`` over sets with ``P(A) >= p``; ``P = N(0, sigma0^2 I_d)``, ``Q = N(delta, sigma1^2 I_d)``, ``||delta|| = r``.

    Exact (the Neyman-Pearson set; see the module docstring) except within a relative ``1e-5`` of
    ``sigma0``, where it returns the lower bound ``Phi(Phi^-1(p) - r/sigma0) - TV`` (never above
    the exact value). ``sigma1`` and ``r`` broadcast.
    """
    _check(p, sigma0, d)
    s1, r = (a.copy() for a in np.broadcast_arrays(np.asarray(sigma1, dtype=float), np.asarray(r, dtype=float)))
    if np.any(s1 <= 0) or np.any(r < 0):
        raise ValueError("need sigma1 > 0 and r >= 0")
    if p <= 0:
        return np.zeros(s1.shape)
    if p >= 1:
        return np.ones(s1.shape)
    near = np.abs(s1 / sigma0 - 1) < _NEAR
    out = np.empty(s1.shape)
    half = norm.cdf(norm.ppf(p) - r / sigma0)
    out[near] = half[near] - scale_tv(sigma0, s1[near], d)
    if np.any(~near):
        out[~near] = _exact(p, sigma0, s1[~near], r[~near], d)
    if np.any(~np.isfinite(out)):
        raise FloatingPointError(f"scipy's ncx2 did not converge for p={p}, sigma0={sigma0}, d={d}; "
                                 "this is a numerical limit, not a certificate: report it")
    return np.clip(out, 0.0, 1.0)


def scale_tv(s: float | np.ndarray, t: float | np.ndarray, d: int) -> np.ndarray:
    """``TV(N(0, s^2 I_d), N(0, t^2 I_d))`` in closed form: the densities cross on the sphere
    ``rho^2 = d ln(t^2/s^2) / (1/s^2 - 1/t^2)`` (``s < t``), so TV is ``F(rho^2/s^2) - F(rho^2/t^2)``,
    ``F`` the chi-square CDF with ``d`` degrees of freedom."""
    s, t = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(t, dtype=float))
    a, b = np.minimum(s, t), np.maximum(s, t)
    out = np.zeros(a.shape)
    diff = b > a
    if np.any(diff):
        a, b = a[diff], b[diff]
        rho2 = d * np.log(b**2 / a**2) / (1 / a**2 - 1 / b**2)
        out[diff] = chi2.cdf(rho2 / a**2, d) - chi2.cdf(rho2 / b**2, d)
    return out


def shift_tv(dr: float | np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """``TV(N(mu, sigma^2 I), N(mu', sigma^2 I)) = 2 Phi(||mu - mu'|| / (2 sigma)) - 1``."""
    return 2 * norm.cdf(np.asarray(dr, dtype=float) / (2 * np.asarray(sigma, dtype=float))) - 1


@dataclass(frozen=True)
class VaryingRadius:
    """The outcome of :func:`varying_radius`: ``certified`` (the worst case exceeds 1/2 at ``r = 0``
    over the whole interval) and the certified ``radius`` (0 when not certified), with the
    smallest verified cell bound at that radius (``margin`` above 1/2) and the grid's size."""

    certified: bool
    radius: float
    worst: float
    nodes: int


def _sigma_nodes(lo: float, hi: float, sigma0: float, d: int, tol: float) -> np.ndarray:
    """Geometric nodes over ``[lo, hi]`` whose neighbouring scales are at most ``tol`` apart in TV (plus ``sigma0`` inside)."""
    if hi <= lo:
        return np.array([lo])
    # the largest log-step with TV(1, e^step) <= tol, by bisection on the closed form
    a, b = 0.0, 1.0
    for _ in range(60):
        m = (a + b) / 2
        a, b = (m, b) if scale_tv(1.0, math.exp(m), d) <= tol else (a, m)
    k = max(1, math.ceil(math.log(hi / lo) / max(a, 1e-12)))
    nodes = np.exp(np.linspace(math.log(lo), math.log(hi), k + 1))
    if lo < sigma0 < hi:
        nodes = np.unique(np.append(nodes, sigma0))
    return nodes


def _grid_bound(p, sigma0, nodes, radius, d, tol_r) -> float:
    """The smallest lower bound on the worst case over ``[0, radius] x [nodes[0], nodes[-1]]``:
    node values minus the TV slack of their cells (``tol_r`` at most in ``r``). Nodes within
    ``tol_r`` in TV of ``sigma0`` take the half-space value at ``sigma0`` minus that TV (a lower bound,
    and cheap where the exact ball's non-centrality, hence scipy's cost, is largest)."""
    cells = 0 if radius == 0 else min(4096, max(1, math.ceil(radius / (2 * nodes[0] * norm.ppf((1 + tol_r) / 2)))))
    rs = np.linspace(0.0, radius, cells + 1)
    tv0 = scale_tv(sigma0, nodes, d)
    close = tv0 <= tol_r
    wc = np.empty((len(rs), len(nodes)))
    wc[:, close] = norm.cdf(norm.ppf(p) - rs[:, None] / sigma0) - tv0[None, close]
    if (~close).any():
        wc[:, ~close] = worst_case(p, sigma0, nodes[None, ~close], rs[:, None], d)
    slack_r = float(shift_tv(radius / cells, nodes[0])) if cells else 0.0
    if len(nodes) == 1:
        return float(wc.min()) - slack_r
    tv = scale_tv(nodes[:-1], nodes[1:], d)  # per sigma cell
    cell = np.maximum(wc[:, :-1], wc[:, 1:]) - tv[None, :]
    return float(min(cell.min(), wc.min())) - slack_r


def varying_radius(p: float, sigma0: float, lo: float, hi: float, d: int, r_max: float = math.inf,
                   tol: float = 0.01, steps: int = 8) -> VaryingRadius:
    """The certified l2 radius when ``P(A) >= p`` under ``N(x, sigma0^2 I_d)`` and the neighbour's
    smoothing scale is anywhere in ``[lo, hi]`` (see the module docstring); at most ``r_max``.

    ``lo == hi == sigma0`` is Cohen's radius ``sigma0 Phi^-1(p)`` exactly. Otherwise the worst case is
    verified on a grid whose cells are bounded by total variation (slack at most ``tol / 2`` in
    sigma and, up to 4,096 radius cells, ``tol / 2`` in r; beyond that cap the slack is larger and
    the radius smaller, never unsound): the returned radius is a guarantee, found by bisection
    (``steps`` verifications) below the radius at which the interval's endpoints reach 1/2.
    """
    _check(p, sigma0, d)
    if not 0 < lo <= hi or r_max < 0:
        raise ValueError(f"need 0 < lo <= hi and r_max >= 0, got lo={lo}, hi={hi}, r_max={r_max}")
    if p <= 0.5:
        return VaryingRadius(False, 0.0, float(p), 0)
    p = min(float(p), 1.0 - 1e-12)  # p = 1 (never a Clopper-Pearson bound) would leave the radius search unbounded
    if lo == hi == sigma0:
        r = min(float(sigma0 * norm.ppf(p)), r_max)
        return VaryingRadius(True, r, float(norm.cdf(norm.ppf(p) - r / sigma0)), 1)
    nodes = _sigma_nodes(lo, hi, sigma0, d, tol / 2)
    at0 = _grid_bound(p, sigma0, nodes, 0.0, d, tol / 2)
    if at0 <= 0.5:
        return VaryingRadius(False, 0.0, at0, len(nodes))
    # the candidate: where the endpoints' exact worst case reaches 1/2 (an upper limit, since
    # endpoints are part of the set), by bisection; then the largest verified radius below it
    ends = np.array([lo, hi])
    top = min(r_max, 2 * float(max(hi, sigma0) * norm.ppf(p)))
    a, b = 0.0, top
    if float(worst_case(p, sigma0, ends, top, d).min()) > 0.5:
        a = top
    else:
        for _ in range(30):
            m = (a + b) / 2
            a, b = (m, b) if float(worst_case(p, sigma0, ends, m, d).min()) > 0.5 else (a, m)
    good, good_bound, bad = 0.0, at0, a
    bound = _grid_bound(p, sigma0, nodes, a, d, tol / 2)
    if bound > 0.5:
        return VaryingRadius(True, float(a), bound, len(nodes))
    for _ in range(steps):
        m = (good + bad) / 2
        bound = _grid_bound(p, sigma0, nodes, m, d, tol / 2)
        if bound > 0.5:
            good, good_bound = m, bound
        else:
            bad = m
    return VaryingRadius(True, float(good), good_bound, len(nodes))
