"""The certification engine: what ``f(x + eps)`` does over many noise draws, for a stream of inputs, fast.

Every Monte Carlo quantity in the book (``Smooth.certify``, ``Smooth.predict``, the dataset
runner, median smoothing, the benchmark) is a reduction of ``f(x + eps)`` over noise draws.
:class:`Engine` computes two reductions:

* ``counts``: class counts of ``argmax f(x + eps)`` (an ``int64`` array per phase);
* ``values``: every real-valued output ``f(x + eps)`` (a float tensor per phase), for order
  statistics such as median smoothing.

Each input is an :class:`Item` that may carry its **own noise distribution and level** and its
own sample sizes; by default all items share the engine's noise and the run's sizes. How it
is fast:

* **one large batch for many inputs.** Samples of consecutive items are packed into full
  forward batches, so ``n0 = 100`` selection draws and the tail of every item no longer run
  as small batches;
* **noise on the device**, drawn per item from that item's own ``torch.Generator`` and its own
  noise, in fixed blocks of ``noise_block`` samples (never crossing a phase such as
  selection/estimation). The noise an item sees therefore depends only on its generator, its
  noise, ``noise_block`` and its sample sizes -- not on the batch size, on which other items
  share a batch, or on where a resumed run started. With ``noise_block = 400`` the Gaussian
  draws are exactly those of Cohen et al.'s published loop (:mod:`rsbook.core.reference`)
  seeded the same way. Items with different noises cost nothing extra: every item draws its
  own blocks anyway;
* **reductions on the device**: one ``index_add_`` per batch into a table of per-item count
  rows, one transfer per finished item;
* ``torch.inference_mode``, ``channels_last`` activations, and optionally ``torch.compile``
  (with weight freezing, which folds batch norm into convolutions) for runs long enough to
  repay the compile time;
* an explicit ``precision`` for the forward pass. ``fp32`` is exact fp32 (TF32 is switched off
  on CUDA); ``tf32``, ``bf16`` and ``fp16`` are faster on hardware that has them. A certificate
  is a statement about the classifier *as evaluated*, so the precision is part of the model
  and is recorded with every result;
* an automatic batch size (``batch_size=None``): the fastest of a short sweep that fits in
  memory.

A **noise-conditioned** model (``noise_conditioned=True``, e.g. a denoiser followed by a
classifier, whose denoising step needs the noise level) is called as ``model(x, sigma)`` with
``sigma`` the ``(B,)`` tensor of each row's noise level.

None of this changes the statistics: every item still gets exactly the requested number of
i.i.d. noise draws per phase, phases draw separate samples, and counts are exact integers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal

import numpy as np
import torch
from torch import nn

from .noise import Gaussian, Noise, make_noise

__all__ = [
    "Engine",
    "Item",
    "PRECISIONS",
    "COMPILE_MIN_SAMPLES",
    "batch_candidates",
    "forward_throughput",
    "precision_context",
    "check_precision",
]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
COMPILE_MIN_SAMPLES = 200_000  # "auto" compiles runs with at least this many forward samples
_BATCHES = {"cpu": (64, 128, 256, 512), "cuda": (256, 512, 1024, 2048, 4096, 8192)}


def batch_candidates(device: torch.device | str) -> tuple[int, ...]:
    """The batch sizes the automatic sweep tries on ``device`` (CUDA: 256-8192, else 64-512)."""
    return _BATCHES["cuda" if torch.device(device).type == "cuda" else "cpu"]


def check_precision(precision: str, device: torch.device) -> str:
    """Validate a precision name for ``device`` (``fp16``/``tf32`` need CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if device.type != "cuda" and precision in ("fp16", "tf32"):
        raise ValueError(f"precision {precision!r} needs a CUDA device (got {device}); use 'fp32' or 'bf16'")
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """Run a forward pass in ``precision``: autocast for bf16/fp16, TF32 on or off on CUDA."""
    if device.type == "cuda":
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            if precision in ("bf16", "fp16"):
                dtype = torch.bfloat16 if precision == "bf16" else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    yield
            else:
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    elif precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def _model_device(model: nn.Module) -> torch.device:
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if t is None else t.device


def _compiler_available(device: torch.device) -> bool:
    if device.type == "cpu":
        return shutil.which("g++") is not None or shutil.which("clang++") is not None
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def _time_forward(fn, batch: torch.Tensor, seconds: float, min_reps: int = 3, warmup: float = 0.3) -> float:
    """Images per second of ``fn(batch)`` after ``warmup`` seconds of unmeasured calls (CUDA synchronized)."""
    sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    t0 = time.perf_counter()
    fn(batch)
    while time.perf_counter() - t0 < warmup:
        fn(batch)
    sync()
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < seconds:
        fn(batch)
        reps += 1
    sync()
    return reps * batch.shape[0] / (time.perf_counter() - t0)


def forward_throughput(
    forward, shape: tuple[int, ...], device: torch.device, batch_sizes: Iterable[int],
    seconds: float = 1.0, channels_last: bool = True, rounds: int = 1,
) -> dict[int, float]:
    """Raw forward throughput (images/s) of ``forward`` on random batches, per batch size.

    With ``rounds > 1`` the batch sizes are measured in alternation and each keeps its best
    round (a busy machine only ever slows a measurement down). Batch sizes from the first
    one that runs out of memory on are skipped.
    """
    sizes, out = list(batch_sizes), {}
    for _ in range(rounds):
        for bs in list(sizes):
            try:
                batch = torch.rand((bs, *shape), device=device)
                if channels_last and batch.dim() == 4:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    rate = _time_forward(forward, batch, seconds, warmup=min(0.3, seconds))
                out[bs] = max(out.get(bs, 0.0), rate)
            except torch.OutOfMemoryError:
                sizes = [b for b in sizes if b < bs]
                break
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return out


@dataclass(frozen=True)
class Item:
    """One input of an engine run.

    Args:
        key: anything; handed back with the input's result.
        x: the input, ``(*shape)`` or ``(1, *shape)``.
        generator: the source of this input's noise (``None``: torch's default generator).
        noise: this input's noise: a :class:`~rsbook.core.noise.Noise`, a ``(name, sigma)``
            pair, or a float meaning ``Gaussian(sigma)``; ``None`` takes the engine's noise.
        sizes: samples per phase for this input; ``None`` takes the run's sizes.
        c_a: the class, when it is given rather than selected (deterministic certification).
            The engine does not read it; :meth:`Smooth.certify_many
            <rsbook.core.certify.Smooth.certify_many>` skips the selection phase for it.
    """

    key: Any
    x: torch.Tensor
    generator: torch.Generator | None = None
    noise: Noise | tuple[str, float] | float | None = None
    sizes: tuple[int, ...] | None = None
    c_a: int | None = None


def as_noise(spec: Any, default: Noise | None = None, where: str = "noise") -> Noise:
    """A :class:`Noise` from a ``Noise``, a ``(name, sigma)`` pair or a float sigma (Gaussian).

    Raises:
        ValueError: naming ``where`` and the fix, for an unknown name or a bad sigma.
    """
    if spec is None:
        if default is None:
            raise ValueError(f"{where}: no noise given and no default; pass a Noise, a (name, sigma) pair or a sigma")
        return default
    if isinstance(spec, Noise):
        return spec
    try:
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return Gaussian(spec)
        if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
            return make_noise(spec[0], spec[1])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    raise ValueError(f"{where}: expected a Noise, a (name, sigma) pair or a float sigma, got {spec!r}")


def _check_sizes(sizes: Any, where: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: sample sizes must be a tuple of positive integers, got {sizes!r}") from None
    if not out or min(out) < 1 or any(int(s) != s for s in sizes):
        raise ValueError(f"{where}: every sample size must be >= 1, got {tuple(sizes)}")
    return out


@dataclass
class _Job:
    """One item in flight: its noise stream, its progress and its result slots."""

    key: Any
    x: torch.Tensor
    generator: torch.Generator | None
    noise: Noise
    sizes: tuple[int, ...]
    slots: list[int]
    plan: list[int]  # sizes of the noise blocks, in draw order (no block crosses a phase)
    buffer: torch.Tensor  # storage for the current noise block, (noise_block, *shape)
    phase: int = 0
    taken: int = 0  # samples of the current phase already put into batches
    block: torch.Tensor | None = None
    block_pos: int = 0
    next_block: int = 0  # index into plan of the next block to draw
    last_batch: int = -1  # index of the batch holding this job's last sample
    values: list[torch.Tensor] = field(default_factory=list)  # reduce="values": one (size, D) tensor per phase

    @property
    def assigned(self) -> bool:
        return self.phase >= len(self.sizes)


def _block_plan(sizes: tuple[int, ...], block: int) -> list[int]:
    """Block sizes for phases ``sizes``: full blocks of ``block``, then each phase's remainder."""
    return [min(block, n - i) for n in sizes for i in range(0, n, block)]


Reduce = Literal["counts", "values"]


class Engine:
    """Reductions of ``model(x + eps)`` over noise draws for streams of inputs (see the module docstring).

    Args:
        model: maps ``(B, *shape)`` inputs to outputs ``(B, K)`` (logits for ``counts``; any
            real values for ``values``); already in ``eval()`` mode. With
            ``channels_last=True`` its weights are converted to channels_last in place (the
            function is unchanged up to floating-point summation order).
        num_classes: ``K`` (needed for ``counts``; ``None`` for a value-only engine).
        noise: the default smoothing distribution; an :class:`Item` may carry its own.
        precision: ``fp32`` | ``tf32`` | ``bf16`` | ``fp16`` (see :data:`PRECISIONS`).
        channels_last: evaluate 4-D inputs in channels_last layout.
        compile: ``True``, ``False``, or ``None`` to compile when a run plans at least
            :data:`COMPILE_MIN_SAMPLES` samples and a compiler is present. Compilation freezes
            the weights: build a new engine after changing them.
        noise_block: samples per noise draw of one item; part of the random stream.
        noise_conditioned: call the model as ``model(x, sigma)`` with each row's noise level.
        static_batches: pad every batch to the full batch size (one static shape); ``None``
            does so exactly when the model is compiled.

    Attributes:
        stats: ``batches``, ``samples``, ``padded`` rows, and ``forward_seconds`` (wall time
            inside the model's forward, counted only while ``timing`` is true; CPU timing).
        sweep_seconds, sweep_rounds: seconds per candidate and round, and rounds, of the
            automatic batch-size sweep.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int | None,
        noise: Noise | None = None,
        precision: str = "fp32",
        channels_last: bool = True,
        compile: bool | None = False,
        noise_block: int = 400,
        noise_conditioned: bool = False,
        static_batches: bool | None = None,
    ):
        if noise_block < 1:
            raise ValueError(f"noise_block must be >= 1, got {noise_block}")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (or None for a value-only engine), got {num_classes}")
        self.model = model
        self.num_classes = None if num_classes is None else int(num_classes)
        self.noise = None if noise is None else as_noise(noise, where="Engine noise")
        self.device = _model_device(model)
        self.precision = check_precision(precision, self.device)
        self.channels_last = channels_last
        self.compile = compile
        self.noise_block = int(noise_block)
        self.noise_conditioned = bool(noise_conditioned)
        self.static_batches = static_batches
        self.compiled = False
        self.timing = False
        self.sweep_seconds = 0.25
        self.sweep_rounds = 3
        self.stats = {"batches": 0, "samples": 0, "padded": 0, "forward_seconds": 0.0}
        self._forward_fn = None
        self._batch_cache: dict[tuple, int] = {}

    def __repr__(self) -> str:
        return (f"Engine({type(self.model).__name__}, device={self.device}, precision={self.precision}, "
                f"channels_last={self.channels_last}, compiled={self.compiled}, noise_block={self.noise_block}"
                + (", noise_conditioned=True" if self.noise_conditioned else "") + ")")

    # -- model preparation ------------------------------------------------------------------
    def prepare(self, planned: int | None = None) -> None:
        """Check the model and set up its evaluation (layout, precision, compilation).

        ``planned`` (total forward samples of the coming run, if known) lets ``compile=None``
        decide whether compiling pays off. Later calls do nothing.
        """
        if self._forward_fn is not None:
            return
        if any(m.training for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            # Batch statistics would couple the samples of a batch (and of different inputs):
            # the draws would no longer be independent, and no certificate would hold.
            raise ValueError("the model has batch-norm layers in training mode; call model.eval() before certifying")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        want = self.compile
        if want is None:
            want = planned is not None and planned >= COMPILE_MIN_SAMPLES and _compiler_available(self.device)
        model = self.model
        if want:
            if self.device.type == "cpu":  # inductor's C++ build warns "No CUDA runtime is found" on every CPU machine
                logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            model = torch.compile(self.model, dynamic=False, options={"freezing": True})
            self.compiled = True
        precision, device = self.precision, self.device

        def forward(batch: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
            with precision_context(precision, device):
                return model(batch) if sigma is None else model(batch, sigma)

        self._forward_fn = forward

    def _fallback_to_eager(self, exc: BaseException) -> None:
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); certifying in eager mode", stacklevel=3)
        self.compile, self.compiled, self._forward_fn = False, False, None
        self._batch_cache.clear()
        self.prepare(None)

    def forward(self, batch: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """The model's output as the engine evaluates it (precision, layout, compilation).

        A noise-conditioned model needs ``sigma`` (a float or a ``(B,)`` tensor).
        """
        self.prepare(None)
        if self.noise_conditioned:
            if sigma is None:
                raise ValueError("this engine's model is noise-conditioned: pass sigma (a float or a (B,) tensor)")
            sigma = torch.as_tensor(sigma, dtype=torch.float32, device=batch.device).expand(batch.shape[0]).contiguous()
            return self._forward_fn(batch, sigma)
        return self._forward_fn(batch)

    def _sweep_forward(self, batch: torch.Tensor) -> torch.Tensor:
        sigma = self.noise.sigma if self.noise is not None else 0.5
        return self.forward(batch, sigma if self.noise_conditioned else None)

    def _buffer(self, bs: int, shape: tuple[int, ...]) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last and len(shape) == 3 else torch.contiguous_format
        return torch.empty((bs, *shape), device=self.device, memory_format=fmt).zero_()

    def batch_size_for(self, shape: tuple[int, ...], batch_size: int | None, seconds: float | None = None,
                       planned: int | None = None) -> int:
        """``batch_size``, or (for ``None``) the fastest of a sweep that fits in memory.

        ``self.sweep_rounds`` alternating rounds of ``seconds`` (default ``self.sweep_seconds``)
        per candidate of :func:`batch_candidates`; each candidate keeps its best round. A run
        known to be too small to repay a sweep (``planned`` below 10 times the largest
        candidate) takes the largest candidate up to a quarter of it, without sweeping.
        """
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1 (or None for automatic), got {batch_size}")
            return int(batch_size)
        key = tuple(shape)
        candidates = batch_candidates(self.device)
        if key not in self._batch_cache and planned is not None and planned < 10 * candidates[-1]:
            return max([c for c in candidates if c <= planned // 4] or [candidates[0]])
        if key not in self._batch_cache:
            self.prepare(None)
            fmt = self.channels_last and len(shape) == 3
            rates = forward_throughput(self._sweep_forward, shape, self.device, candidates,
                                       self.sweep_seconds if seconds is None else seconds, fmt, rounds=self.sweep_rounds)
            if not rates:
                raise RuntimeError(f"even a batch of {candidates[0]} does not fit on {self.device}; pass a smaller batch_size")
            self._batch_cache[key] = max(rates, key=rates.get)
        return self._batch_cache[key]

    def throughput(self, shape: tuple[int, ...], batch_size: int, seconds: float = 1.0, rounds: int = 1) -> float:
        """Measured raw forward throughput (inputs/s) of the model as the engine evaluates it."""
        self.prepare(None)
        fmt = self.channels_last and len(shape) == 3
        return forward_throughput(self._sweep_forward, shape, self.device, [batch_size], seconds, fmt, rounds)[batch_size]

    def warmup(self, shape: tuple[int, ...], batch_size: int | None, planned: int | None = None) -> int:
        """Prepare the model, compile it now if chosen (falling back to eager if the compiler
        fails), and return the batch size a run on inputs of ``shape`` will use."""
        self.prepare(planned)
        if self.compiled:
            try:
                with torch.inference_mode():
                    bs = self.batch_size_for(shape, batch_size, planned=planned)
                    self._sweep_forward(self._buffer(bs, shape))
            except Exception as exc:  # noqa: BLE001 -- any compiler failure
                self._fallback_to_eager(exc)
        with torch.inference_mode():
            return self.batch_size_for(shape, batch_size, planned=planned)

    # -- runs -----------------------------------------------------------------------------------
    def counts(self, items: Iterable[Item | tuple], sizes: tuple[int, ...], batch_size: int | None,
               planned: int | None = None) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield ``(key, counts)`` per item, in input order: an ``int64`` array ``(phases, K)``.

        Row ``j`` counts ``argmax model(x + eps)`` over ``sizes[j]`` fresh draws (phase ``j``,
        e.g. selection then estimation); an item's own ``sizes`` replace the run's.
        """
        return self.run(items, sizes, batch_size, planned, reduce="counts")

    def values(self, items: Iterable[Item | tuple], sizes: tuple[int, ...], batch_size: int | None,
               planned: int | None = None) -> Iterator[tuple[Any, list[torch.Tensor]]]:
        """Yield ``(key, values)`` per item, in input order: one float32 CPU tensor
        ``(sizes[j], D)`` of model outputs per phase, rows in draw order."""
        return self.run(items, sizes, batch_size, planned, reduce="values")

    def run(
        self,
        items: Iterable[Item | tuple],
        sizes: tuple[int, ...],
        batch_size: int | None,
        planned: int | None = None,
        reduce: Reduce = "counts",
    ) -> Iterator[tuple[Any, Any]]:
        """The general run behind :meth:`counts` and :meth:`values`.

        ``items`` are :class:`Item` s or ``(key, x, generator)`` tuples; they are pulled only
        when their samples are needed, so a stream of a whole dataset is fine.
        """
        if reduce not in ("counts", "values"):
            raise ValueError(f"reduce must be 'counts' or 'values', got {reduce!r}")
        if reduce == "counts" and self.num_classes is None:
            raise ValueError("counting classes needs num_classes; this engine was built with num_classes=None")
        sizes = _check_sizes(sizes, "run")
        return self._stream(iter(items), sizes, batch_size, planned, reduce)

    def _stream(self, it, sizes, batch_size, planned, reduce):
        first = next(it, None)
        if first is None:
            return
        first = self._item(first, sizes, shape=None)
        shape = first.x.shape
        bs = self.warmup(tuple(shape), batch_size, planned)
        with torch.inference_mode():
            yield from self._run(first, it, tuple(shape), sizes, bs, reduce)

    def _item(self, raw: Item | tuple, sizes: tuple[int, ...], shape: tuple[int, ...] | None) -> _Job:
        """Validate one item (naming it and the field in every error) into a job without slots."""
        item = raw if isinstance(raw, Item) else Item(*raw)
        where = f"item {item.key!r}"
        noise = as_noise(item.noise, self.noise, where=f"{where}, field 'noise'")
        x = item.x
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{where}, field 'x': expected a tensor, got {type(x).__name__}")
        if x.dim() == (4 if shape is None else len(shape) + 1) and x.shape[0] == 1:  # a batch of one
            x = x.squeeze(0)
        if shape is not None and tuple(x.shape) != shape:
            raise ValueError(f"{where}, field 'x': shape {tuple(x.shape)} differs from this run's {shape}; "
                             "all inputs of one run must share a shape: run them separately")
        item_sizes = sizes if item.sizes is None else _check_sizes(item.sizes, f"{where}, field 'sizes'")
        return _Job(item.key, x.to(self.device, non_blocking=True), item.generator, noise, item_sizes, [], [], None)  # type: ignore[arg-type]

    def _run(self, first: _Job, it, shape, sizes, bs, reduce) -> Iterator[tuple[Any, Any]]:
        device, K = self.device, self.num_classes or 1
        counting = reduce == "counts"
        pad_batches = self.compiled if self.static_batches is None else self.static_batches
        plans: dict[tuple[int, ...], list[int]] = {}
        free_buffers: list[torch.Tensor] = []  # noise-block storage of finished jobs, reused
        buf = self._buffer(bs, shape)
        # Count table: row 0 is a sink for padded rows; free rows are recycled.
        table = torch.zeros((1 + len(sizes) * (2 + math.ceil(bs / min(sizes))), K), dtype=torch.long, device=device)
        free = list(range(table.shape[0] - 1, 0, -1))
        rows = torch.zeros(bs, dtype=torch.long, device=device)
        sigma_rows = torch.zeros(bs, dtype=torch.float32, device=device) if self.noise_conditioned else None
        jobs: list[_Job] = []
        pending = [first]
        exhausted = False

        def start(job: _Job) -> _Job:
            nonlocal table
            P = len(job.sizes)
            while len(free) < P:  # grow the table
                old = table.shape[0]
                table = torch.cat([table, torch.zeros_like(table)])
                free.extend(range(2 * old - 1, old - 1, -1))
            job.slots = [free.pop() for _ in range(P)]
            job.plan = plans.setdefault(job.sizes, _block_plan(job.sizes, self.noise_block))
            job.buffer = free_buffers.pop() if free_buffers else torch.empty((self.noise_block, *shape), device=device)
            return job

        batch_index = 0
        while True:
            # Fill one batch with the next samples of the jobs in input order.
            fill, segs = 0, []  # segs: (job, phase, offset in phase, rows) per contiguous run of rows
            for job in jobs:
                fill = self._take(job, buf, fill, bs, segs, batch_index)
            while fill < bs:
                if not pending and not exhausted:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                    else:
                        pending.append(self._item(nxt, sizes, shape))
                if not pending:
                    break
                job = start(pending.pop())
                jobs.append(job)
                fill = self._take(job, buf, fill, bs, segs, batch_index)
            if fill == 0:
                return
            pad = bs - fill if pad_batches else 0  # compiled graphs run one static shape
            n_rows = fill + pad
            lens = torch.tensor([s[3] for s in segs] + [bs - fill], dtype=torch.long)
            if counting:
                ids = torch.tensor([s[0].slots[s[1]] for s in segs] + [0], dtype=torch.long)
                rows.copy_(torch.repeat_interleave(ids, lens), non_blocking=True)
            if sigma_rows is not None:
                sig = torch.tensor([s[0].noise.sigma for s in segs] + [1.0], dtype=torch.float32)
                sigma_rows.copy_(torch.repeat_interleave(sig, lens), non_blocking=True)
            t0 = time.perf_counter() if self.timing else 0.0
            out = self._forward_fn(buf[:n_rows], None if sigma_rows is None else sigma_rows[:n_rows])
            if counting:
                pred = out.argmax(1)
                table.view(-1).index_add_(0, rows[:n_rows] * K + pred, torch.ones_like(pred))
            else:
                vals = out.reshape(n_rows, -1).float()
                start_row = 0
                for job, phase, offset, k in segs:
                    if not job.values:
                        job.values = [torch.empty((n, vals.shape[1]), device=device) for n in job.sizes]
                    job.values[phase][offset : offset + k].copy_(vals[start_row : start_row + k])
                    start_row += k
            if self.timing:
                self.stats["forward_seconds"] += time.perf_counter() - t0
            self.stats["batches"] += 1
            self.stats["samples"] += fill
            self.stats["padded"] += pad
            # Hand out every job whose last sample was in this batch.
            while jobs and jobs[0].assigned and jobs[0].last_batch <= batch_index:
                job = jobs.pop(0)
                free_buffers.append(job.buffer)  # all its blocks are used (stream order protects it on CUDA)
                if counting:
                    slots = torch.tensor(job.slots, device=device)
                    result = table.index_select(0, slots).cpu().numpy()
                    table.index_fill_(0, slots, 0)
                else:
                    result = [v.cpu() for v in job.values]
                free.extend(job.slots)
                yield job.key, result
            batch_index += 1

    def _take(self, job: _Job, buf, fill, bs, segs, batch_index) -> int:
        """Write ``job``'s next noisy samples into ``buf[fill:]``; returns the new fill."""
        while fill < bs and not job.assigned:
            need = job.sizes[job.phase]
            if job.block is None or job.block_pos >= job.block.shape[0]:
                # The next block, drawn from the job's generator in plan order into its buffer
                # (reused block after block, and job after job: a fresh multi-megabyte tensor
                # per block costs more in page faults than drawing the noise).
                m = job.plan[job.next_block]
                job.next_block += 1
                job.block, job.block_pos = job.noise.sample_(job.buffer[:m], generator=job.generator), 0
            k = min(bs - fill, job.block.shape[0] - job.block_pos, need - job.taken)
            torch.add(job.block[job.block_pos : job.block_pos + k], job.x, out=buf[fill : fill + k])
            segs.append((job, job.phase, job.taken, k))
            job.block_pos += k
            job.taken += k
            fill += k
            job.last_batch = batch_index
            if job.taken == need:  # next phase: its own blocks
                job.phase, job.taken, job.block = job.phase + 1, 0, None
        return fill
