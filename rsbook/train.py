"""Training base classifiers with noise augmentation (Cohen et al. 2019).

Fresh noise is drawn for every batch. ``sigma_mode="fixed"`` adds ``N(0, sigma^2 I)`` to every
image; ``"universal"`` draws a per-image ``sigma_i ~ U(0, sigma)`` (paper 4's universal
training with ``sigma'_a = sigma``). Training checkpoints after every epoch into a work
folder, so a killed run resumes from its last finished epoch with the same random stream.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .artifacts import ArtifactStore, save_atomic
from .data import NUM_CLASSES, ImageDataset, load_dataset
from .models import build_model
from .noise import make_noise

__all__ = ["TrainConfig", "train", "trained_model", "evaluate_accuracy"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (its hash names the artifact)."""

    dataset: str = "cifar10"
    arch: str = "cnn4"
    noise: str = "gaussian"
    sigma: float = 0.25
    sigma_mode: str = "fixed"  # "fixed" or "universal" (sigma_i ~ U(0, sigma) per image)
    epochs: int = 90
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # "step" (x0.1 every `step_every` epochs) or "cosine" (per iteration)
    step_every: int = 30
    augment: bool = True  # random crop (pad 4) + flip; CIFAR only
    train_subset: int = 0  # 0: the whole training set; k > 0: its first k images
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sigma_mode not in ("fixed", "universal"):
            raise ValueError(f"sigma_mode must be 'fixed' or 'universal', got {self.sigma_mode!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")


def _lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / (cfg.epochs * steps_per_epoch)))
    return 0.1 ** ((step // steps_per_epoch) // cfg.step_every)


def _add_noise(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    if cfg.sigma == 0:
        return x
    if cfg.sigma_mode == "fixed":
        return x + make_noise(cfg.noise, cfg.sigma).sample(x.shape, generator=generator, device=x.device)
    # universal: sigma_i ~ U(0, sigma) per image; unit noise scaled per image
    s = torch.rand(x.shape[0], generator=generator, device=x.device) * cfg.sigma
    unit = make_noise(cfg.noise, 1.0).sample(x.shape, generator=generator, device=x.device)
    return x + unit * s.view(-1, *([1] * (x.dim() - 1)))


def train(
    cfg: TrainConfig,
    train_set: ImageDataset | None = None,
    work_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    channels_last: bool = True,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train a model for ``cfg``; returns ``(model in eval mode, per-epoch history)``.

    With ``work_dir``, a checkpoint (model, optimizer, epoch, generator states) is written
    atomically after each epoch and a later call resumes from it.
    """
    device = torch.device(device)
    if train_set is None:
        train_set = load_dataset(cfg.dataset, train=True)
    if cfg.train_subset:
        train_set = train_set.subset(torch.arange(min(cfg.train_subset, len(train_set))))
    torch.manual_seed(cfg.seed)  # only for weight initialisation, which has no generator argument
    model = build_model(cfg.arch, cfg.dataset, train_set.num_classes).to(device)
    if channels_last and device.type != "mps":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(cfg, s, steps_per_epoch))
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = Path(work_dir) / "checkpoint.pt" if work_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_gen"].cpu())
        noise_gen.set_state(state["noise_gen"].cpu())
        history = [dict(zip(state["history_keys"], row.tolist())) for row in state["history"]]
        start_epoch = int(state["epoch"])
        if progress:
            print(f"resuming {cfg.arch} on {cfg.dataset} from epoch {start_epoch}/{cfg.epochs}", flush=True)
    augment = cfg.augment and cfg.dataset == "cifar10"
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0, tot_loss, tot_correct, seen = time.perf_counter(), 0.0, 0, 0
        batches = train_set.batches(cfg.batch_size, shuffle=True, augment=augment, generator=data_gen, device=device)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, mininterval=5, leave=False)
        for x, y in bar:
            x = _add_noise(x, cfg, noise_gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(y)
            tot_correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        history.append({"epoch": epoch + 1, "loss": tot_loss / seen, "noisy_train_acc": tot_correct / seen, "seconds": time.perf_counter() - t0})
        if progress:
            h = history[-1]
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {h['loss']:.4f}, noisy train acc {h['noisy_train_acc']:.4f}, {h['seconds']:.0f} s", flush=True)
        if ckpt is not None:
            keys = list(history[0])
            save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "data_gen": data_gen.get_state(),
                    "noise_gen": noise_gen.get_state(),
                    "epoch": epoch + 1,
                    "history_keys": keys,
                    "history": torch.tensor([[h[k] for k in keys] for h in history], dtype=torch.float64),
                },
                ckpt,
            )
    return model.eval(), history


def trained_model(
    cfg: TrainConfig,
    store: ArtifactStore,
    device: torch.device | str = "cpu",
    train_set: ImageDataset | None = None,
    progress: bool = True,
) -> torch.nn.Module:
    """Load the model for ``cfg`` from ``store``, training (and storing) it first if needed.

    The stored state_dict is fp16 (floating tensors); it is loaded back as fp32, and that
    fp32 model is the one every chapter certifies.
    """

    def compute(out: Path, work: Path) -> dict[str, Any]:
        model, history = train(cfg, train_set, work_dir=work, device=device, progress=progress)
        sd = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(sd, out)
        return {"history": history}

    store.load_or_compute(cfg, compute, "pt", device=device)
    sd = store.load_tensors(cfg, "pt")
    model = build_model(cfg.arch, cfg.dataset, NUM_CLASSES.get(cfg.dataset, 10))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.to(device).eval()


@torch.inference_mode()
def evaluate_accuracy(model: torch.nn.Module, dataset: ImageDataset, batch_size: int = 500, device: torch.device | str = "cpu") -> float:
    """Clean accuracy of ``model`` (eval mode) on ``dataset``."""
    model.eval()
    correct = 0
    for x, y in dataset.batches(batch_size, device=device):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(dataset)
