"""The noise-level selector ``h(x + eps, sigma_a, lam) -> sigma_s > 0`` of variational smoothing (paper 4, Fig. 3).

What the paper fixes: ``x + eps`` enters the first convolution; ``sigma_a`` and ``lam`` enter
through positional encodings added after the first convolution, followed by self-attention;
the output is a positive noise level. What it leaves open is **this book's reconstruction**:
the widths (32 and 64 channels), the strides, sinusoidal encodings with 16 frequencies, one
four-head attention layer over the 8 x 8 feature map with a residual and layer norm, mean
pooling, and ``softplus`` on the output with its bias set so that an untrained selector
returns ``init_sigma``.

:class:`FixedInputs` binds ``sigma_a``, ``lam`` and the clipping ``[h_l, h_u]`` so that the
selector is an ordinary ``x -> (B, 1)`` model, as the engine's ``values`` reduction wants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["encode", "NoiseSelector", "FixedInputs"]


def encode(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal positional encoding of scalars ``v`` (B,) in ``dim`` (even) features, frequencies
    ``pi * 2^k``, ``k < dim / 2``, so that values in [0, 1] are told apart at every scale."""
    freqs = math.pi * 2.0 ** torch.arange(dim // 2, device=v.device, dtype=v.dtype)
    ang = v[:, None] * freqs[None, :]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


class NoiseSelector(nn.Module):
    """``h(x, sigma_a, lam)``: a ``(B,)`` tensor of positive noise levels (see the module docstring).

    Args:
        channels: input channels (3 for CIFAR-10).
        init_sigma: the output of the untrained selector (the bias of the softplus).
        width: channels after the first convolution (the second has ``2 width``).
    """

    def __init__(self, channels: int = 3, init_sigma: float = 0.25, width: int = 32, freqs: int = 16, heads: int = 4):
        super().__init__()
        if init_sigma <= 0:
            raise ValueError(f"init_sigma must be > 0, got {init_sigma}")
        self.conv1 = nn.Conv2d(channels, width, 3, stride=2, padding=1)
        self.enc = nn.Linear(4 * freqs, width)  # encodings of sigma_a and lam, added after conv1
        self.freqs = freqs
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.attn = nn.MultiheadAttention(2 * width, heads, batch_first=True)
        self.norm = nn.LayerNorm(2 * width)
        self.head = nn.Linear(2 * width, 1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # softplus(b) = init_sigma
            self.head.bias.fill_(math.log(math.expm1(init_sigma)))

    def forward(self, x: torch.Tensor, sigma_a: torch.Tensor | float, lam: torch.Tensor | float) -> torch.Tensor:
        b = x.shape[0]
        sigma_a = torch.as_tensor(sigma_a, dtype=x.dtype, device=x.device).expand(b)
        lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device).expand(b)
        z = self.conv1(x)
        z = F.relu(z + self.enc(torch.cat([encode(sigma_a, 2 * self.freqs), encode(lam, 2 * self.freqs)], 1))[:, :, None, None])
        z = F.relu(self.conv2(z))
        tokens = z.flatten(2).transpose(1, 2)  # (B, H*W, C)
        tokens = self.norm(tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0])
        return F.softplus(self.head(tokens.mean(1))).squeeze(1) + 1e-4


class FixedInputs(nn.Module):
    """``x -> clip(h(x, sigma_a, lam), h_l, h_u)`` as a ``(B, 1)`` output (the engine's ``values``).

    Clipping is monotone, so it commutes with medians and order statistics: the clipped
    selector's median-smoothing bounds are the clipped bounds.
    """

    def __init__(self, selector: nn.Module, sigma_a: float, lam: float, clip: tuple[float, float] | None = None):
        super().__init__()
        if clip is not None and not 0 < clip[0] <= clip[1]:
            raise ValueError(f"clip must be (h_l, h_u) with 0 < h_l <= h_u, got {clip}")
        self.selector, self.sigma_a, self.lam, self.clip = selector, float(sigma_a), float(lam), clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.selector(x, self.sigma_a, self.lam)
        if self.clip is not None:
            out = out.clamp(*self.clip)
        return out[:, None]
