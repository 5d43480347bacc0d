"""Synthetic models whose smoothed behaviour is known in closed form (tests and worked examples).

* :class:`NormBandClassifier`: class ``band_class`` when ``||z - center|| / sqrt(d)`` lies in
  ``[a, b]``, class ``other`` elsewhere. Smoothed at ``center`` with ``N(0, sigma^2 I_d)``, its
  band probability is ``F(d (b/sigma)^2) - F(d (a/sigma)^2)`` (``F`` the chi-square CDF, ``d`` degrees
  of freedom), which is non-monotone in ``sigma``: the vote changes class between noise levels.
* :class:`LinearSelector`: ``h(z) = s0 + k w . (z - center)``, ``||w|| = 1``. Under
  ``N(0, sigma_m^2 I)`` its output is ``N(h(x), (k sigma_m)^2)``, so its median at ``x`` is ``h(x)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NormBandClassifier", "LinearSelector"]


class NormBandClassifier(nn.Module):
    """Logits ``(B, K)`` of the norm-band classifier (see the module docstring)."""

    def __init__(self, center: torch.Tensor, a: float, b: float, band_class: int = 1, other: int = 0, num_classes: int = 2):
        super().__init__()
        if not 0 <= a < b:
            raise ValueError(f"need 0 <= a < b, got a={a}, b={b}")
        self.register_buffer("center", center.detach().clone().reshape(1, -1))
        self.a, self.b, self.band_class, self.other, self.num_classes = float(a), float(b), int(band_class), int(other), int(num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(z.shape[0], -1)
        u = (flat - self.center).norm(dim=1) / math.sqrt(flat.shape[1])
        inside = (u >= self.a) & (u <= self.b)
        out = torch.zeros(z.shape[0], self.num_classes, device=z.device)
        out[torch.arange(z.shape[0]), torch.where(inside, self.band_class, self.other)] = 1.0
        return out


class LinearSelector(nn.Module):
    """``(B, 1)`` outputs ``s0 + k w . (z - center)`` (see the module docstring)."""

    def __init__(self, center: torch.Tensor, w: torch.Tensor, s0: float, k: float):
        super().__init__()
        w = w.reshape(-1).double()
        self.register_buffer("center", center.detach().clone().reshape(1, -1))
        self.register_buffer("w", (w / w.norm()).float()[:, None])
        self.s0, self.k = float(s0), float(k)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.s0 + self.k * (z.reshape(z.shape[0], -1) - self.center) @ self.w
