"""One resumable training loop for every method: ``fit(model, step, config, work_dir, data=...)``.

A method supplies only its ``step``: a callable ``step(model, batch, generator) -> (loss,
metrics)`` that computes the loss of one batch (drawing any noise from ``generator``) and a
dict of batch-mean metrics for the history. The loop does the rest, the same way for every
method:

* SGD or Adam with a step, cosine or constant learning-rate schedule (per iteration);
* data order and augmentation from a CPU generator seeded by ``config.seed``, noise from a
  generator on the device seeded by ``config.seed + 1`` -- no global seeding;
* an atomic checkpoint after every epoch (model, optimizer, scheduler, both generators, the
  history, and the step's own state if it has any), so a killed run resumes from its last
  finished epoch and ends with the same weights as an uninterrupted one;
* progress bars, a per-epoch line and, after the first epoch, the estimated remaining time.

A step may also define ``start_epoch(model, epoch)`` (e.g. HeatSmoothing refreshes its
frozen copy of the model at each timestep) and ``state_dict()`` / ``load_state_dict()`` for
state that must survive a resume.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from ..methods.step import Batch, Step
from ..infra.artifacts import ArtifactStore, save_atomic
from ..infra.data import ImageDataset
from ..infra.timing import format_duration

__all__ = ["FitConfig", "fit", "load_or_fit", "lr_factor", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine", "constant")


@dataclass(frozen=True)
class FitConfig:
    """How to optimize (what to optimize is the step's business).

    ``max_batches > 0`` stops every epoch after that many batches (dry runs of big settings).
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # step: x0.1 every `step_every` epochs; cosine: to 0 per iteration; constant
    step_every: int = 30
    augment: bool = False  # random crop (pad 4) + flip, for CIFAR-sized images
    seed: int = 0
    max_batches: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")



def lr_factor(cfg: FitConfig, step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier after ``step`` iterations."""
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / (cfg.epochs * steps_per_epoch)))
    if cfg.schedule == "constant":
        return 1.0
    return 0.1 ** ((step // steps_per_epoch) // cfg.step_every)


def _optimizer(cfg: FitConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def fit(
    model: nn.Module,
    step: Step,
    config: FitConfig,
    work_dir: str | Path | None = None,
    *,
    data: ImageDataset,
    device: torch.device | str = "cpu",
    progress: bool = True,
    channels_last: bool = True,
    desc: str = "",
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train ``model`` with ``step`` on ``data``; returns ``(model in eval mode, per-epoch history)``.

    With ``work_dir``, a checkpoint is written atomically after each epoch and a later call
    with the same arguments resumes from it. Each history row has ``epoch``, ``loss``, the
    step's metrics (batch means weighted by batch size) and ``seconds``.
    """
    device = torch.device(device)
    model = model.to(device)
    if channels_last and device.type != "mps":
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(config, [p for p in model.parameters() if p.requires_grad])
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device).manual_seed(config.seed + 1)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    if config.max_batches:
        steps_per_epoch = min(steps_per_epoch, config.max_batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(config, s, steps_per_epoch))
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = Path(work_dir) / "checkpoint.pt" if work_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except Exception as exc:  # noqa: BLE001 -- unpickling, missing keys and shape errors alike
            raise RuntimeError(f"cannot resume from {ckpt} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                               "it belongs to another model or is damaged: delete it to train from scratch") from None
        sched.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_gen"].cpu())
        noise_gen.set_state(state["noise_gen"].cpu())
        if hasattr(step, "load_state_dict") and "step" in state:
            step.load_state_dict(state["step"])
        history = [dict(zip(state["history_keys"], row.tolist())) for row in state["history"]]
        start_epoch = int(state["epoch"])
        if progress:
            print(f"resuming {desc or type(model).__name__} from epoch {start_epoch}/{config.epochs}", flush=True)
    fmt = torch.channels_last if channels_last and device.type != "mps" else None
    for epoch in range(start_epoch, config.epochs):
        if hasattr(step, "start_epoch"):
            step.start_epoch(model, epoch)
        model.train()
        t0, seen, sums = time.perf_counter(), 0, {"loss": 0.0}
        batches = data.batches(config.batch_size, shuffle=True, augment=config.augment, generator=data_gen, device=device, indices=True)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"{desc + ' ' if desc else ''}epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, mininterval=5, leave=False)
        for b, (x, y, index) in enumerate(bar):
            if b == steps_per_epoch:
                break
            if fmt is not None and x.dim() == 4:
                x = x.contiguous(memory_format=fmt)
            loss, metrics = step(model, Batch(x, y, index), noise_gen)
            if not torch.isfinite(loss.detach()):
                done = history[-1]["epoch"] if history else 0
                kept = f"epoch {done} is kept in the checkpoint" if done and ckpt is not None else "no epoch was kept"
                raise FloatingPointError(
                    f"{desc or type(model).__name__}: the training loss is {float(loss.detach())} at epoch {epoch + 1}, batch "
                    f"{b + 1}: the run diverged ({kept}; nothing was stored). Lower the learning rate (now {config.lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["loss"] += float(loss.detach()) * len(y)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(y)
            seen += len(y)
        history.append({"epoch": epoch + 1, **{k: v / seen for k, v in sums.items()}, "seconds": time.perf_counter() - t0})
        if progress:
            h = history[-1]
            shown = ", ".join(f"{k} {v:.4f}" for k, v in h.items() if k not in ("epoch", "seconds"))
            left = config.epochs - epoch - 1
            eta = f"; about {format_duration(h['seconds'] * left)} to go" if left and epoch == start_epoch else ""
            print(f"{desc + ': ' if desc else ''}epoch {epoch + 1}/{config.epochs}: {shown}, {h['seconds']:.0f} s{eta}", flush=True)
        if ckpt is not None:
            keys = list(history[0])
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "data_gen": data_gen.get_state(),
                "noise_gen": noise_gen.get_state(),
                "epoch": epoch + 1,
                "history_keys": keys,
                "history": torch.tensor([[h[k] for k in keys] for h in history], dtype=torch.float64),
            }
            if hasattr(step, "state_dict"):
                state["step"] = step.state_dict()
            save_atomic(state, ckpt)
    return model.eval(), history


def load_or_fit(
    config: Any,
    store: ArtifactStore,
    build: Callable[[], nn.Module],
    train: Callable[[Path], tuple[nn.Module, list[dict[str, float]]]],
    device: torch.device | str = "cpu",
) -> nn.Module:
    """The model for ``config`` from ``store``, trained by ``train(work_dir)`` and stored first if needed.

    The stored state_dict is fp16 (floating tensors, about half the size); it is loaded back
    into ``build()`` as fp32, and that fp32 model is the one the book certifies. The history
    goes into the artifact's metadata.
    """

    def compute(out: Path, work: Path) -> dict[str, Any]:
        model, history = train(work)
        sd = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(sd, out)
        return {"history": history}

    store.load_or_compute(config, compute, "pt", device=device)
    sd = store.load_tensors(config, "pt")
    model = build()
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    except RuntimeError as exc:
        payload, _ = store.paths(config, "pt")
        raise RuntimeError(f"{payload} does not fit the model its config describes ({str(exc).splitlines()[0][:200]}); "
                           f"{store.fix_hint(payload)}") from None
    return model.to(device).eval()
