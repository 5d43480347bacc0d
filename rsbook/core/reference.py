"""Cohen et al.'s published certification loop, written as their code does it.

This is the *reference* the engine is checked and benchmarked against (tests and
``rsbook bench certify``), never the loop the book certifies with. Per image: repeat ``x``
into batches of 400, ``randn_like`` noise from the global RNG, forward pass, argmax, counts
moved to the CPU after every batch; ``n0`` selection draws, then ``n`` estimation draws.
"""

from __future__ import annotations

import numpy as np
import torch

from .noise import Noise

__all__ = ["REFERENCE_BATCH", "reference_counts", "reference_certify"]

REFERENCE_BATCH = 400  # Cohen et al.'s batch size


def reference_counts(model, x: torch.Tensor, num: int, noise: Noise, num_classes: int, batch: int = REFERENCE_BATCH) -> np.ndarray:
    """Cohen et al.'s ``_sample_noise``: class counts over ``num`` draws, as published.

    Draws from the global RNG (``randn_like``); counts go to the CPU after every batch.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    remaining = num
    with torch.no_grad():
        while remaining > 0:
            this = min(batch, remaining)
            remaining -= this
            b = x.repeat((this, 1, 1, 1))
            if noise.name == "gaussian":
                eps = torch.randn_like(b) * noise.sigma
            else:  # the published code is Gaussian-only; other noises draw the same way as the engine
                eps = noise.sample(b.shape, device=b.device)
            preds = model(b + eps).argmax(1)
            counts += np.bincount(preds.cpu().numpy(), minlength=num_classes)
    return counts


def reference_certify(model, x, n0, n, alpha, noise, num_classes, seed: int, batch: int = REFERENCE_BATCH):
    """The published CERTIFY's counts ``(counts0, counts)``, the global RNG seeded by ``seed``.

    ``seed`` plays the role of :func:`~rsbook.core.streams.image_generator`'s seed, so the
    engine, seeded the same way, draws the same Gaussian noise.
    """
    torch.manual_seed(seed)
    counts0 = reference_counts(model, x, n0, noise, num_classes, batch)
    counts = reference_counts(model, x, n, noise, num_classes, batch)
    return counts0, counts
