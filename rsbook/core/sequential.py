"""Anytime-valid sequential certification: stop sampling as soon as the answer is known.

Cohen et al.'s CERTIFY fixes the number ``n`` of estimation samples in advance. Here the
samples of an input are drawn in growing chunks, and after each chunk a **confidence
sequence** for ``p_A`` is updated: a bound that holds *simultaneously at every sample size*,
so it may be read after every chunk and sampling may stop whenever the answer is clear
(Voracek 2024; Howard et al. 2021). Two questions are answered:

* **decide** (``radii=...``): is the input certified at each radius of a list (the radii of a
  paper's table)? Sampling stops when every listed radius is decided, or at ``n_max``;
* **estimate** (``precision=...``): its certified radius, to within ``precision``, or at
  ``n_max``; the lower bound at the stopping time is reported (so ACR can be computed).

The confidence sequence (:class:`BetaBinomialCS`)
--------------------------------------------------
For ``S`` successes (``f(x + eps) = c_A``) in ``n`` draws, and a Beta(a, b) prior fixed in
advance, the wealth of the conjugate-mixture martingale against the null value ``p`` is

    W_n(p) = B(a + S, b + n - S) / B(a, b) / (p^S (1 - p)^(n - S)),

the Bayes factor of the Beta-binomial marginal against ``Bernoulli(p)``. It is the
mixture, over the alternative ``q ~ Beta(a, b)``, of the likelihood ratios ``prod q^X (1-q)^(1-X)
/ p^X (1-p)^(1-X)``, each a nonnegative martingale with mean 1 when ``p`` is the true mean;
equivalently the wealth of a bettor who spreads a unit of capital over all constant bets
(the betting view of Waudby-Smith & Ramdas 2023). So ``W_n(p_A)`` is a nonnegative
martingale with ``W_0 = 1``, and by **Ville's inequality** ``P(exists n: W_n(p_A) >= 1/alpha)
<= alpha``. The set ``{p : W_n(p) < 1/alpha}`` is therefore a ``(1 - alpha)`` confidence
sequence (Robbins 1970; Howard et al. 2021, Sec. 3). ``log W_n(p)`` is convex in ``p`` with its
minimum (``<= 0``) at ``p = S/n``, so the set is an interval ``(L_n, U_n)`` and ``W_n`` decreases
on ``[0, S/n]``. Hence, for every radius ``r`` with threshold ``t_r`` (the ``p`` whose radius is
``r``): "certified at ``r``" whenever ``L_n > t_r`` at some ``n`` is wrong only if
``W_n(p_A) >= W_n(t_r) >= 1/alpha`` at that ``n``, for any ``t_r >= p_A``: **one alpha covers
every radius and every stopping time** of the input. ``L_n`` is found by bisection and
rounded down, and the running maximum of ``L_n`` is reported (the running intersection of a
confidence sequence is one too).

Giving up ("not certified at ``r``") is never unsound, so it may use any rule; the rules are
chosen for power. A radius is given up (a) at once when even ``n_max`` agreeing samples from
now on could not certify it (a radius above the cap of ``n_max`` is "not certified" before
any sample is drawn), and (b) when the upper end of the ``(1 - futility)`` sequence falls
below the ``S/n_max`` that certification at ``n_max`` needs: with probability at least
``1 - futility`` the input would not have been certified at ``r`` by ``n_max`` then either.

The betting sequence (:class:`BettingCS`, ``Sequential(sequence="betting")``)
--------------------------------------------------------------------------------
A second confidence sequence, from testing by betting (Waudby-Smith & Ramdas 2023): against each
null value ``p`` of a grid ``p_0 < p_1 < ...`` (the thresholds of the radii, plus a fine grid), a
bettor stakes ``lambda_k(p) in [0, h / p]`` on "the next draw succeeds", with a **predictable
plug-in** bet fixed before chunk ``k`` from the earlier chunks only: the Kelly bet for a Bernoulli
mean, ``lambda = (q - p) / (p (1 - p))``, at the shrunk estimate ``q = (S + a) / (n + a + b)``,
clipped to ``[0, h / p]`` (``h < 1`` keeps the wealth positive). Its wealth
``K_n(p) = prod (1 + lambda_k (X_i - p))`` is a nonnegative supermartingale for every true mean
``<= p`` (each factor has mean ``1 + lambda (p_A - p) <= 1``), so by Ville's inequality it reaches
``1/alpha`` with probability at most ``alpha``. The grid point ``g = min{p_j >= p_A}`` alone
decides coverage: "``p_A > p_j``" is claimed only once every grid point ``<= p_j`` has been
rejected (at some time), which for ``p_j >= p_A`` includes ``g``. So **one alpha covers every
radius and every stopping time** here too; the lower bound is the largest such ``p_j``
(rounded down to the grid). Giving up uses rule (a) exactly (the wealth a run of successes could
still reach, at the capped bet) and rule (b) with the Beta-binomial futility sequence (it affects
power only). Only the decide mode is offered with this sequence.

As in CERTIFY, ``n0`` separate selection samples choose ``c_A`` and are not reused.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy.special import betaln, xlog1py, xlogy

from .certificate import ABSTAIN, Certificate
from .engine import Engine, Item, as_noise
from .noise import Noise

__all__ = [
    "BetaBinomialCS",
    "BettingCS",
    "SEQUENCES",
    "Sequential",
    "SequentialCertificate",
    "certify_sequential",
    "checkpoints",
    "required_successes",
    "naive_stop",
]

_LOG_SLACK = 1e-9  # a point is excluded only with this much wealth to spare: float error in betaln cannot un-round L_n


@dataclass(frozen=True)
class BetaBinomialCS:
    """The conjugate-mixture (Beta-binomial) confidence sequence for a Bernoulli mean.

    ``lower(S, n)`` and ``upper(S, n)`` are ``(1 - alpha)``-confidence bounds valid
    *simultaneously over all n* (see the module docstring). The prior ``Beta(a, b)`` only
    shapes where the sequence is tight: ``b < 1`` puts mass near ``p = 1``, where the
    certificates at large radii are decided.
    """

    alpha: float
    a: float = 1.0
    b: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.a <= 0 or self.b <= 0:
            raise ValueError(f"the Beta prior needs a, b > 0, got a={self.a}, b={self.b}")

    def log_wealth(self, s, n, p) -> np.ndarray:
        """``log W_n(p)``, vectorized over ``s``, ``n`` and ``p`` (``+inf`` where ``p`` is impossible)."""
        s, n, p = np.asarray(s, float), np.asarray(n, float), np.asarray(p, float)
        with np.errstate(divide="ignore"):
            return betaln(self.a + s, self.b + n - s) - betaln(self.a, self.b) - xlogy(s, p) - xlog1py(n - s, -p)

    def lower(self, s, n, iters: int = 60) -> np.ndarray:
        """``L_n``: the bottom of the sequence, from below (bisection keeps a point outside the set)."""
        s, n = np.broadcast_arrays(np.asarray(s, float), np.asarray(n, float))
        lo, hi = np.zeros(s.shape), np.where(n > 0, s / np.maximum(n, 1), 1.0)
        thr = math.log(1 / self.alpha) + _LOG_SLACK
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            out = self.log_wealth(s, n, mid) >= thr
            lo, hi = np.where(out, mid, lo), np.where(out, hi, mid)
        return lo

    def upper(self, s, n, iters: int = 60) -> np.ndarray:
        """``U_n``: the top of the sequence, from above."""
        s, n = np.asarray(s, float), np.asarray(n, float)
        return 1.0 - BetaBinomialCS(self.alpha, self.b, self.a).lower(n - s, n, iters)


def required_successes(cs: BetaBinomialCS, n: int, t: float) -> int | None:
    """The smallest ``S`` with ``cs.lower(S, n) > t``: what certification at the threshold
    ``t`` needs after ``n`` samples (``None`` if not even ``S = n`` suffices)."""
    if not cs.lower(n, n) > t:
        return None
    lo, hi = -1, n  # lower(lo) <= t < lower(hi); lower is nondecreasing in S
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cs.lower(mid, n) > t:
            hi = mid
        else:
            lo = mid
    return hi


#: The confidence sequences :class:`Sequential` offers.
SEQUENCES = ("beta-binomial", "betting")


@dataclass(frozen=True)
class BettingCS:
    """Predictable plug-in betting against a grid of null values (see the module docstring).

    ``grid`` holds the null values ``p_j`` (sorted, in ``(0, 1)``); ``hedge`` caps each bet at
    ``hedge / p``; ``a``, ``b`` shrink the plug-in estimate ``q = (S + a) / (n + a + b)``. The state of
    one input is its log wealth per grid point and which points were ever rejected.
    """

    alpha: float
    grid: tuple[float, ...]
    hedge: float = 0.9
    a: float = 0.5
    b: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        g = np.asarray(self.grid, float)
        if g.ndim != 1 or not len(g) or np.any(np.diff(g) <= 0) or g[0] <= 0 or g[-1] >= 1:
            raise ValueError("grid must be a strictly increasing sequence of null values in (0, 1)")
        if not 0 < self.hedge < 1:
            raise ValueError(f"hedge must lie in (0, 1), got {self.hedge}")

    @property
    def threshold(self) -> float:
        """``log(1 / alpha)``: the log wealth at which a null value is rejected."""
        return math.log(1 / self.alpha)

    def bets(self, s, n) -> np.ndarray:
        """``lambda(p_j)`` per grid point for inputs with ``s`` successes in ``n`` draws so far, shape ``(len(s), len(grid))``."""
        p = np.asarray(self.grid, float)[None, :]
        q = ((np.asarray(s, float) + self.a) / (np.asarray(n, float) + self.a + self.b))[:, None]
        return np.clip((q - p) / (p * (1 - p)), 0.0, self.hedge / p)

    def log_wealth(self, log_w, bets, s, m) -> np.ndarray:
        """The log wealth after a chunk of ``m`` draws with ``s`` successes, each at its input's fixed ``bets``."""
        p = np.asarray(self.grid, float)[None, :]
        s, m = np.asarray(s, float)[:, None], np.asarray(m, float)[:, None]
        return log_w + s * np.log1p(bets * (1 - p)) + (m - s) * np.log1p(-bets * p)

    def best_gain(self) -> np.ndarray:
        """The largest log-wealth gain of one draw per grid point (a success at the capped bet)."""
        p = np.asarray(self.grid, float)
        return np.log1p(self.hedge * (1 - p) / p)

    def lower(self, rejected) -> np.ndarray:
        """The lower bound per input: the largest ``p_j`` with every grid point ``<= p_j`` rejected (0 if none)."""
        r = np.atleast_2d(np.asarray(rejected, bool))
        prefix = np.cumprod(r, axis=1).sum(axis=1)  # rejected grid points before the first one that is not
        g = np.r_[0.0, np.asarray(self.grid, float)]
        return g[prefix]


def betting_grid(thresholds: Iterable[float], n_max: int, per_decade: int = 32) -> tuple[float, ...]:
    """The null values of :class:`BettingCS`: the radii's ``thresholds`` (exactly, so each radius is
    decided at its own threshold) and ``1 - 10^(-k / per_decade) / 2`` from 1/2 up to ``1 - 1 / n_max``,
    so that the reported lower bound (hence the radius) is fine where ``p_A`` is large."""
    k = np.arange(0, int(math.ceil(per_decade * math.log10(n_max / 2))) + 1)
    fine = 1 - 0.5 * 10.0 ** (-k / per_decade)
    pts = np.r_[np.asarray(list(thresholds), float), fine]
    return tuple(float(v) for v in np.unique(pts[(pts > 0) & (pts < 1)]))


def checkpoints(first: int, growth: float, n_max: int) -> np.ndarray:
    """Sample sizes after which the sequence is read: ``ceil(first * growth^k)``, up to ``n_max``."""
    if first < 1 or growth <= 1:
        raise ValueError(f"checkpoints need first >= 1 and growth > 1, got first={first}, growth={growth}")
    out, v = [], float(first)
    while v < n_max:
        k = math.ceil(v)
        if not out or k > out[-1]:
            out.append(k)
        v *= growth
    out.append(int(n_max))
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class Sequential:
    """How a sequential certification samples and stops (``n`` of the run is ``n_max``).

    Args:
        radii: decide "certified at r?" for each (radius 0, whether to abstain, is always added);
            ``()`` with ``precision`` set estimates the radius instead.
        precision: estimate mode: stop when the radius is known to within this (in the noise's norm).
        futility: the chance, per radius, of giving up on an input that ``n_max`` samples would
            have certified (affects only power, never soundness).
        prior_a, prior_b: the Beta prior of the confidence sequence (fixed before any sample).
        first, growth: the sequence is read after ``ceil(first * growth^k)`` estimation samples.
        sequence: the confidence sequence, ``"beta-binomial"`` (:class:`BetaBinomialCS`) or
            ``"betting"`` (:class:`BettingCS`, decide mode only).
    """

    radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
    precision: float | None = None
    futility: float = 0.01
    prior_a: float = 1.0
    prior_b: float = 0.1
    first: int = 64
    growth: float = 1.1
    sequence: str = field(default="beta-binomial", metadata={"key_omits_default": "nested"})  # added later: keys kept

    def __post_init__(self) -> None:
        radii = tuple(sorted({0.0, *(float(r) for r in self.radii)}))
        if radii[0] < 0:
            raise ValueError(f"radii must be >= 0, got {self.radii}")
        object.__setattr__(self, "radii", radii)
        if self.precision is not None and not self.precision > 0:
            raise ValueError(f"precision must be > 0 (or None to decide at radii), got {self.precision}")
        if not 0 < self.futility < 1:
            raise ValueError(f"futility must lie in (0, 1), got {self.futility}")
        if self.sequence not in SEQUENCES:
            raise ValueError(f"sequence must be one of {SEQUENCES}, got {self.sequence!r}")
        if self.sequence == "betting" and self.precision is not None:
            raise ValueError("the betting sequence decides at radii only; use sequence='beta-binomial' to estimate (precision)")
        checkpoints(self.first, self.growth, self.first + 1)


@dataclass(frozen=True)
class SequentialCertificate(Certificate):
    """The outcome for one input: a :class:`~rsbook.core.certificate.Certificate` with the guarantee
    ``"sequential"``, plus the decision ``certified[i]`` at each ``radii[i]``.

    ``prediction`` is ``c_A`` or ``ABSTAIN`` (not certified at radius 0); ``radius`` the radius
    of ``p_lower`` (0 when abstaining); ``p_lower`` the running maximum of ``L_n`` at the stop;
    ``samples`` every forward pass (``selection`` of them choosing ``c_A``; ``estimation`` the rest).
    """

    radii: tuple[float, ...] = ()
    certified: tuple[bool, ...] = ()


@dataclass
class _State:
    key: Any
    x: torch.Tensor
    generator: torch.Generator | None
    noise: Noise
    c_a: int | None
    selection: int  # samples spent choosing c_A (0 when it was given, or not drawn yet)
    thresholds: np.ndarray
    need: np.ndarray  # S needed at n_max per radius (n_max + 1: unreachable)
    s: int = 0
    n: int = 0
    k: int = 0  # index of the next checkpoint
    lower: float = 0.0
    decided: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    certified: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    done: bool = False
    bet: "_Bettor | None" = None  # the betting sequence's state (None: Beta-binomial)


@dataclass
class _Bettor:
    """One input's betting state: the grid, each radius's grid index, log wealth, rejected points."""

    cs: BettingCS
    index: np.ndarray  # grid position of each radius's threshold
    log_w: np.ndarray
    rejected: np.ndarray


def certify_sequential(
    engine: Engine,
    items: Iterable[Item],
    n0: int,
    n_max: int,
    alpha: float,
    seq: Sequential,
    batch_size: int | None,
    default_noise: Noise | None = None,
    window: int = 64,
    ordered: bool = True,
) -> Iterator[SequentialCertificate]:
    """Sequential CERTIFY for a stream of items, yielding results in input order (or, with
    ``ordered=False``, as soon as each is done: a slow input holds nothing back).

    Up to ``window`` inputs are sampling at once; each round draws every one's next chunk in
    shared forward batches of the ``engine``. An item's draws come from its own generator in chunk
    order, and its chunks depend only on its own counts, so its result does not depend on
    which other items share its batches (a resumed run repeats it).
    """
    if not (isinstance(n_max, (int, np.integer)) and n_max >= 1) or not (isinstance(n0, (int, np.integer)) and n0 >= 1):
        raise ValueError(f"n0 and n_max must be positive integers, got n0={n0!r}, n_max={n_max!r}")
    cs = BetaBinomialCS(alpha, seq.prior_a, seq.prior_b)
    fut = BetaBinomialCS(seq.futility, seq.prior_a, seq.prior_b)
    marks = checkpoints(seq.first, seq.growth, int(n_max))
    radii = np.array(seq.radii)
    need_cache: dict[Noise, tuple[np.ndarray, np.ndarray, BettingCS | None]] = {}
    betting = seq.sequence == "betting"

    def thresholds(noise: Noise) -> tuple[np.ndarray, np.ndarray, BettingCS | None]:
        if noise not in need_cache:
            t = np.asarray(noise.required_p(radii), float)
            need = np.array([n_max + 1 if (v := required_successes(cs, int(n_max), float(ti))) is None else v for ti in t])
            bcs = BettingCS(alpha, betting_grid(t, int(n_max))) if betting else None
            need_cache[noise] = (t, need, bcs)
        return need_cache[noise]

    def state(item: Item) -> _State:
        noise = as_noise(item.noise, default_noise or engine.noise, where=f"item {item.key!r}, field 'noise'")
        t, need, bcs = thresholds(noise)
        st = _State(item.key, item.x, item.generator, noise, item.c_a, 0, t, need,
                    decided=np.zeros(len(radii), bool), certified=np.zeros(len(radii), bool))
        if bcs is not None:
            g = np.asarray(bcs.grid)
            st.bet = _Bettor(bcs, np.searchsorted(g, t), np.zeros(len(g)), np.zeros(len(g), bool))
        _update(st)  # radii beyond the cap are decided before any sample
        return st

    def _update(st: _State, lower: float = 0.0, upper: float = 1.0) -> None:
        """Fold in the bounds after the latest chunk (``lower``/``upper``: ``L_n`` and the
        futility sequence's ``U_n``, computed for the whole round at once)."""
        st.lower = max(st.lower, lower)
        if st.bet is None:
            hit = ~st.decided & (st.lower > st.thresholds)
        else:  # a radius is certified once every grid point up to its threshold is rejected
            hit = ~st.decided & (st.lower >= st.thresholds)
        st.certified |= hit
        st.decided |= hit
        reach = st.s + (n_max - st.n)  # successes at n_max if every remaining sample agrees
        if st.bet is None:
            give_up = reach < st.need
        else:  # the wealth a run of successes at the capped bet could still reach, per grid point
            b = st.bet
            short = ~b.rejected & (b.log_w + (n_max - st.n) * b.cs.best_gain() < b.cs.threshold)
            first_short = int(np.argmax(short)) if short.any() else len(short)
            give_up = b.index >= first_short
        if st.n and seq.precision is None:
            give_up |= upper * n_max < st.need
        st.decided |= give_up & ~st.decided
        if st.n >= n_max or (st.decided[0] and not st.certified[0]):
            st.decided[:] = True
        if seq.precision is None:
            st.done = bool(st.decided.all())
        else:
            st.done = bool(st.decided[0] and not st.certified[0]) or st.n >= n_max or _precise(st, upper)

    def _precise(st: _State, upper: float) -> bool:
        if not st.n:
            return False
        top = min(upper, float(cs.lower(st.s + n_max - st.n, n_max)))
        r_top, r_low = (max(float(st.noise.certified_radius(v)), 0.0) for v in (top, st.lower))
        return r_top - r_low <= seq.precision

    def result(st: _State) -> SequentialCertificate:
        pred = st.c_a if st.certified[0] else ABSTAIN
        radius = max(float(st.noise.certified_radius(st.lower)), 0.0) if st.certified[0] else 0.0
        if st.certified[0]:  # a radius decided certified is certified exactly (the betting bound sits on its threshold,
            radius = max(radius, float(radii[st.certified].max()))  # whose radius float rounding may put a hair below it)
        return SequentialCertificate(int(pred), radius, st.noise, st.lower, st.n + st.selection, st.selection, "sequential", st.key,
                                     seq.radii, tuple(bool(c) for c in st.certified))

    it = iter(items)
    order: deque[_State] = deque()  # every state not yet handed out, in input order
    active: list[_State] = []  # the states still sampling (at most ``window``)
    exhausted = False
    planned = int(window * n_max // 10)  # the same guess every round, so the engine picks one batch size once
    while True:
        while not exhausted and len(active) < window:
            nxt = next(it, None)
            if nxt is None:
                exhausted = True
            else:
                st = state(nxt if isinstance(nxt, Item) else Item(*nxt))
                order.append(st)
                if not st.done:
                    active.append(st)
        if ordered:
            while order and order[0].done:
                yield result(order.popleft())
        else:
            for st in [st for st in order if st.done]:
                yield result(st)
            order = deque(st for st in order if not st.done)
        if not active:
            if exhausted and not order:
                return
            continue
        jobs = []
        for j, st in enumerate(active):
            if st.c_a is None:  # selection: n0 separate samples choose c_A
                jobs.append(Item(j, st.x, st.generator, st.noise, (int(n0),)))
            else:
                while marks[st.k] <= st.n:
                    st.k += 1
                jobs.append(Item(j, st.x, st.generator, st.noise, (int(marks[st.k] - st.n),)))
        sampled = []
        for j, counts in engine.counts(jobs, (1,), batch_size, planned):
            st = active[j]
            if st.c_a is None:
                st.c_a = int(np.argmax(counts[0]))
                st.selection = int(counts[0].sum())
            else:
                hits, m = int(counts[0][st.c_a]), int(counts[0].sum())
                if st.bet is not None:  # the bets were fixed by the earlier chunks (s, n before this one)
                    b = st.bet
                    lam = b.cs.bets([st.s], [st.n])
                    b.log_w = b.cs.log_wealth(b.log_w[None, :], lam, [hits], [m])[0]
                    b.rejected |= b.log_w >= b.cs.threshold
                st.s += hits
                st.n += m
                sampled.append(st)
        if sampled:
            s_, n_ = np.array([st.s for st in sampled]), np.array([st.n for st in sampled])
            lows = (cs.lower(s_, n_) if not betting else
                    np.array([float(st.bet.cs.lower(st.bet.rejected[None, :])[0]) for st in sampled]))
            for st, lo, up in zip(sampled, lows, fut.upper(s_, n_)):
                _update(st, float(lo), float(up))
        active = [st for st in active if not st.done]


def naive_stop(draw: Callable[[int], int], n_max: int, alpha: float, threshold: float, marks: Sequence[int]) -> bool:
    """The NEGATIVE CONTROL: read the fixed-``n`` Clopper-Pearson bound after every checkpoint
    and certify as soon as it clears ``threshold``. Each look is valid at its own ``n``, but
    stopping on the first success is not: the error rate exceeds ``alpha``. Not for use."""
    from .bounds import clopper_pearson_lower

    s = n = 0
    for m in marks:
        s += draw(int(m) - n)
        n = int(m)
        if clopper_pearson_lower(s, n, alpha) > threshold:
            return True
        if n >= n_max:
            break
    return False
