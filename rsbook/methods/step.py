"""What a method hands the training loop: a ``Step`` on a ``Batch``.

A method's training step is a callable ``step(model, batch, generator) -> (loss, metrics)``;
:func:`rsbook.training.fit.fit` runs it (optimizer, schedule, checkpoints, resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

__all__ = ["Batch", "Step"]

@dataclass
class Batch:
    """One training batch: images in [0, 1], labels, and the images' positions in the training set."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


class Step(Protocol):
    """A method's training step (see the module docstring)."""

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...
