"""The certification engine: class counts of ``f(x + eps)`` for a stream of images, fast.

Every Monte Carlo quantity in the book (``Smooth.certify``, ``Smooth.predict``, the dataset
runner, the benchmark) is a vector of class counts over noise draws. :class:`Engine` computes
them for many images at once:

* **one large batch for many images.** Samples of consecutive images are packed into full
  forward batches, so ``n0 = 100`` selection draws and the tail of every image no longer run
  as small batches;
* **noise on the device**, drawn per image from that image's own ``torch.Generator`` in fixed
  blocks of ``noise_block`` samples (never crossing a phase such as selection/estimation).
  The noise an image sees therefore depends only on its generator, ``noise_block`` and the
  sample sizes -- not on the batch size, on which other images share a batch, or on where a
  resumed run started. With ``noise_block = 400`` the draws are exactly those of Cohen et
  al.'s reference loop (batches of 400, ``randn_like``) seeded the same way;
* **counts on the device**: one ``index_add_`` per batch into a table of per-image count rows,
  one transfer per finished image;
* ``torch.inference_mode``, ``channels_last`` activations, and optionally ``torch.compile``
  (with weight freezing, which folds batch norm into convolutions) for runs long enough to
  repay the compile time;
* an explicit ``precision`` for the forward pass. ``fp32`` is exact fp32 (TF32 is switched off
  on CUDA); ``tf32``, ``bf16`` and ``fp16`` are faster on hardware that has them. A certificate
  is a statement about the classifier *as evaluated*, so the precision is part of the model
  and is recorded with every result;
* an automatic batch size (``batch_size=None``): the fastest of a short sweep that fits in
  memory.

None of this changes the statistics: every image still gets exactly the requested number of
i.i.d. noise draws, the selection draws are separate from the estimation draws, and the counts
are exact integers.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .noise import Noise

__all__ = ["Engine", "PRECISIONS", "COMPILE_MIN_SAMPLES", "forward_throughput", "precision_context"]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
COMPILE_MIN_SAMPLES = 200_000  # "auto" compiles runs with at least this many forward samples
_CPU_BATCHES = (64, 128, 256, 512)
_GPU_BATCHES = (256, 512, 1024, 2048, 4096, 8192)


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


@dataclass
class _Job:
    """One image in flight: its noise stream, its progress and its count-table slots."""

    key: Any
    x: torch.Tensor
    generator: torch.Generator | None
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

    @property
    def assigned(self) -> bool:
        return self.phase >= len(self.sizes)


def _block_plan(sizes: tuple[int, ...], block: int) -> list[int]:
    """Block sizes for phases ``sizes``: full blocks of ``block``, then each phase's remainder."""
    return [min(block, n - i) for n in sizes for i in range(0, n, block)]


class Engine:
    """Class counts of ``model(x + eps)`` for streams of images (see the module docstring).

    Args:
        model: maps ``(B, *shape)`` inputs to logits ``(B, K)``; already in ``eval()`` mode.
            With ``channels_last=True`` its weights are converted to channels_last in place
            (the function is unchanged up to floating-point summation order).
        num_classes: ``K``.
        noise: the smoothing distribution.
        precision: ``fp32`` | ``tf32`` | ``bf16`` | ``fp16`` (see :data:`PRECISIONS`).
        compile: ``True``, ``False``, or ``None`` to compile when a run plans at least
            :data:`COMPILE_MIN_SAMPLES` samples and a compiler is present. Compilation freezes
            the weights: build a new engine after changing them.
        noise_block: samples per noise draw of one image; part of the random stream.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        noise: Noise,
        precision: str = "fp32",
        channels_last: bool = True,
        compile: bool | None = False,
        noise_block: int = 400,
    ):
        if noise_block < 1:
            raise ValueError(f"noise_block must be >= 1, got {noise_block}")
        self.model = model
        self.num_classes = int(num_classes)
        self.noise = noise
        self.device = _model_device(model)
        self.precision = check_precision(precision, self.device)
        self.channels_last = channels_last
        self.compile = compile
        self.noise_block = int(noise_block)
        self._forward_fn = None
        self.compiled = False
        self._batch_cache: dict[tuple, int] = {}
        self.sweep_seconds = 0.25  # per batch size and round of the automatic batch-size sweep
        self.stats = {"batches": 0, "samples": 0, "padded": 0}

    def __repr__(self) -> str:
        return (f"Engine({type(self.model).__name__}, device={self.device}, precision={self.precision}, "
                f"channels_last={self.channels_last}, compiled={self.compiled}, noise_block={self.noise_block})")

    # -- model preparation ------------------------------------------------------------------
    def _prepare(self, planned: int | None) -> None:
        if self._forward_fn is not None:
            return
        if any(m.training for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            # Batch statistics would couple the samples of a batch (and of different images):
            # the counts would no longer be independent draws, and no certificate would hold.
            raise ValueError("the model has batch-norm layers in training mode; call model.eval() before certifying")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        want = self.compile
        if want is None:
            want = planned is not None and planned >= COMPILE_MIN_SAMPLES and _compiler_available(self.device)
        model = self.model
        if want:
            model = torch.compile(self.model, dynamic=False, options={"freezing": True})
            self.compiled = True
        precision, device = self.precision, self.device

        def forward(batch: torch.Tensor) -> torch.Tensor:
            with precision_context(precision, device):
                return model(batch)

        self._forward_fn = forward

    def _fallback_to_eager(self, exc: BaseException) -> None:
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); certifying in eager mode", stacklevel=3)
        self.compile, self.compiled, self._forward_fn = False, False, None
        self._batch_cache.clear()
        self._prepare(None)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of the model as evaluated by the engine (precision, layout, compilation)."""
        self._prepare(None)
        return self._forward_fn(batch)

    def _buffer(self, bs: int, shape: tuple[int, ...]) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last and len(shape) == 3 else torch.contiguous_format
        return torch.empty((bs, *shape), device=self.device, memory_format=fmt).zero_()

    def batch_size_for(self, shape: tuple[int, ...], batch_size: int | None, seconds: float | None = None) -> int:
        """``batch_size``, or (for ``None``) the fastest of a sweep that fits in memory.

        Three alternating rounds of ``seconds`` (default ``self.sweep_seconds``) per candidate;
        each candidate keeps its best round.
        """
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1 (or None for automatic), got {batch_size}")
            return int(batch_size)
        key = tuple(shape)
        if key not in self._batch_cache:
            candidates = _GPU_BATCHES if self.device.type == "cuda" else _CPU_BATCHES
            fmt = self.channels_last and len(shape) == 3
            rates = forward_throughput(self._forward_fn, shape, self.device, candidates,
                                       self.sweep_seconds if seconds is None else seconds, fmt, rounds=3)
            if not rates:
                raise RuntimeError(f"even a batch of {candidates[0]} does not fit on {self.device}; pass a smaller batch_size")
            self._batch_cache[key] = max(rates, key=rates.get)
        return self._batch_cache[key]

    # -- counting -----------------------------------------------------------------------------
    def counts(
        self,
        items: Iterable[tuple[Any, torch.Tensor, torch.Generator | None]],
        sizes: tuple[int, ...],
        batch_size: int | None,
        planned: int | None = None,
    ) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield ``(key, counts)`` for each ``(key, x, generator)`` item, in input order.

        ``counts`` is an ``int64`` array ``(len(sizes), K)``: row ``j`` counts ``sizes[j]``
        fresh noise draws (phase ``j``, e.g. selection then estimation). Items are pulled from
        ``items`` only when their samples are needed, so a stream of a whole dataset is fine.
        ``planned`` (total samples, if known) lets ``compile=None`` decide whether to compile.
        """
        sizes = tuple(int(s) for s in sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every sample size must be >= 1, got {sizes}")
        self._prepare(planned)
        it = iter(items)
        first = next(it, None)
        if first is None:
            return
        shape = tuple(first[1].shape[1:] if first[1].dim() == 4 else first[1].shape)
        with torch.inference_mode():
            if self.compiled:
                try:  # compile now (and fall back to eager if this machine cannot)
                    bs = self.batch_size_for(shape, batch_size)
                    self._forward_fn(self._buffer(bs, shape))
                except Exception as exc:  # noqa: BLE001 -- any compiler failure
                    self._fallback_to_eager(exc)
            bs = self.batch_size_for(shape, batch_size)
            yield from self._run(first, it, shape, sizes, bs)

    def _run(self, first, it, shape, sizes, bs) -> Iterator[tuple[Any, np.ndarray]]:
        device, K, P = self.device, self.num_classes, len(sizes)
        plan = _block_plan(sizes, self.noise_block)
        free_buffers: list[torch.Tensor] = []  # noise-block storage of finished jobs, reused
        buf = self._buffer(bs, shape)
        # Count table: row 0 is a sink for padded rows; free rows are recycled.
        table = torch.zeros((1 + P * (2 + math.ceil(bs / min(sizes))), K), dtype=torch.long, device=device)
        free = list(range(table.shape[0] - 1, 0, -1))
        rows = torch.zeros(bs, dtype=torch.long, device=device)
        jobs: list[_Job] = []
        pending = [first]
        exhausted = False

        def start(item) -> _Job:
            nonlocal table, free
            key, x, gen = item
            x = x.to(device, non_blocking=True)
            if x.dim() == len(shape) + 1:
                x = x.squeeze(0)
            if tuple(x.shape) != shape:
                raise ValueError(f"all images of one run must have the same shape: {tuple(x.shape)} != {shape}")
            if len(free) < P:  # grow the table
                old = table.shape[0]
                table = torch.cat([table, torch.zeros_like(table)])
                free.extend(range(2 * old - 1, old - 1, -1))
            buffer = free_buffers.pop() if free_buffers else torch.empty((self.noise_block, *shape), device=device)
            return _Job(key, x, gen, sizes, [free.pop() for _ in range(P)], plan, buffer)

        batch_index = 0
        while True:
            # Fill one batch with the next samples of the jobs in input order.
            fill, row_ids, lens = 0, [], []
            for job in jobs:
                fill = self._take(job, buf, fill, bs, row_ids, lens, batch_index)
            while fill < bs:
                if not pending and not exhausted:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                    else:
                        pending.append(nxt)
                if not pending:
                    break
                job = start(pending.pop())
                jobs.append(job)
                fill = self._take(job, buf, fill, bs, row_ids, lens, batch_index)
            if fill == 0:
                return
            pad = bs - fill if self.compiled else 0  # compiled graphs run one static shape
            ids = torch.tensor(row_ids + [0], dtype=torch.long)
            reps = torch.tensor(lens + [bs - fill], dtype=torch.long)
            rows.copy_(torch.repeat_interleave(ids, reps), non_blocking=True)
            n_rows = fill + pad
            pred = self._forward_fn(buf[:n_rows]).argmax(1)
            table.view(-1).index_add_(0, rows[:n_rows] * K + pred, torch.ones_like(pred))
            self.stats["batches"] += 1
            self.stats["samples"] += fill
            self.stats["padded"] += pad
            # Hand out every job whose last sample was in this batch.
            while jobs and jobs[0].assigned and jobs[0].last_batch <= batch_index:
                job = jobs.pop(0)
                slots = torch.tensor(job.slots, device=device)
                counts = table.index_select(0, slots)
                table.index_fill_(0, slots, 0)
                free.extend(job.slots)
                free_buffers.append(job.buffer)  # all its blocks are used (stream order protects it on CUDA)
                yield job.key, counts.cpu().numpy()
            batch_index += 1

    def _next_block(self, job: _Job) -> torch.Tensor:
        """The job's next noise block, drawn from its generator in plan order into its buffer.

        The buffer is reused block after block (and job after job): a fresh multi-megabyte
        tensor per block costs more in page faults than drawing the noise.
        """
        m = job.plan[job.next_block]
        job.next_block += 1
        return self.noise.sample_(job.buffer[:m], generator=job.generator)

    def _take(self, job: _Job, buf, fill, bs, row_ids, lens, batch_index) -> int:
        """Write ``job``'s next noisy samples into ``buf[fill:]``; returns the new fill."""
        while fill < bs and not job.assigned:
            need = job.sizes[job.phase]
            if job.block is None or job.block_pos >= job.block.shape[0]:
                job.block, job.block_pos = self._next_block(job), 0
            k = min(bs - fill, job.block.shape[0] - job.block_pos, need - job.taken)
            torch.add(job.block[job.block_pos : job.block_pos + k], job.x, out=buf[fill : fill + k])
            row_ids.append(job.slots[job.phase])
            lens.append(k)
            job.block_pos += k
            job.taken += k
            fill += k
            job.last_batch = batch_index
            if job.taken == need:  # next phase: its own blocks
                job.phase, job.taken, job.block = job.phase + 1, 0, None
        return fill
