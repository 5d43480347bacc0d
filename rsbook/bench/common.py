"""What the benchmarks share: the benchmarked model, the test images, a device sync and the JSON writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..infra.data import NUM_CLASSES

if TYPE_CHECKING:
    from .certify import BenchConfig

__all__ = ["write_json"]


def _load_model(cfg: BenchConfig, device: torch.device) -> torch.nn.Module:
    """``cfg``'s model on ``device``: random weights, or the state dict at ``cfg.weights`` (a path
    relative to the checkout is found from anywhere)."""
    from ..models.classifiers import build_model, load_weights

    model = build_model(cfg.model, cfg.dataset, NUM_CLASSES[cfg.dataset])
    if cfg.weights != "random":
        path = Path(cfg.weights)
        if not path.is_absolute() and not path.is_file():  # repo-relative paths keep configs portable
            from ..infra.paths import repo_root

            path = repo_root() / path
        load_weights(model, str(path), f"{cfg.model} ({cfg.dataset})",
                     f"pass --weights a {cfg.model} state dict for {cfg.dataset} (a .pt file), or 'random'")
    return model.float().eval().to(device)


def _images(cfg: BenchConfig) -> tuple[torch.Tensor, list[int]]:
    from ..infra.data import embedded_test_subset

    subset = embedded_test_subset(cfg.dataset)
    if cfg.images > len(subset):
        raise ValueError(f"--images {cfg.images}: the embedded {cfg.dataset} subset has {len(subset)} images")
    xs = torch.stack([subset[i][0] for i in range(cfg.images)])
    return xs, [int(i) for i in subset.indices[: cfg.images]]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")
