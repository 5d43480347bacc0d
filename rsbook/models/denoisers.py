"""Image-to-image networks for denoised smoothing (chapter 1).

* :class:`ScoreUNet`: a compact noise-conditional U-Net ``s(y, sigma)`` for the score of the
  noisy density. Residual blocks with GroupNorm and SiLU, a sinusoidal embedding of
  ``log sigma`` added in every block, one skip connection per resolution. Two standard
  parameterizations make it usable at *any* ``sigma`` (not only the training grid):
  the input is scaled by ``1 / sqrt(s_data^2 + sigma^2)`` (Karras et al. 2022) and the
  output is divided by ``sigma`` (Song and Ermon 2020), so the network predicts the noise
  ``-sigma s`` whose scale does not depend on ``sigma``. The widths are this book's choice,
  picked by measured CPU speed (see chapter 1); ``width`` scales it up for a GPU.
* :class:`DnCNN`: Zhang et al.'s (2017) denoiser as used by Salman et al. (2020): ``depth``
  3x3 convolutions of ``width`` channels (BatchNorm + ReLU between), residual output
  ``y - net(y)``; 17 x 64 in the paper. It takes ``(y, sigma)`` and ignores ``sigma``
  (one network per noise level, as Salman et al. train it).

Why hand-written: diffusers' ``UNet2DModel`` is the field's standard U-Net, but its smallest
sensible configuration runs at 130-209 images/s on this machine's 2 cores (issue 9's
measurement), which would put every certification of the chapter beyond its budget; the
compact network here is measured against it in the chapter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ScoreUNet", "DnCNN", "DENOISER_ARCHS", "build_denoiser", "SIGMA_DATA"]

SIGMA_DATA = 0.25  # about the per-pixel std of CIFAR-10 images in [0, 1]


def _groups(ch: int) -> int:
    return math.gcd(8, ch)  # 8 groups where the width allows


class _SigmaEmbedding(nn.Module):
    """``log sigma`` -> sinusoidal features -> a small MLP.

    The frequencies are low (0.1 to 1.5 per unit of ``log sigma``) so that the embedding is
    smooth between the training levels (adjacent levels of the 10-level grid are 0.51 apart
    in ``log sigma``); high frequencies would let the network treat each level separately and
    interpolate arbitrarily between them.
    """

    def __init__(self, dim: int):
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(0.1), math.log(1.5), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        a = torch.log(sigma).unsqueeze(1) * self.freqs
        return self.mlp(torch.cat([a.sin(), a.cos()], dim=1))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x))) + self.emb(e)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class ScoreUNet(nn.Module):
    """Noise-conditional score network ``s(y, sigma)`` on ``[0, 1]``-pixel images (see module doc).

    ``sigma`` is one level per row (or a float); the output has ``y``'s shape.
    Levels ``width * mult`` at resolutions ``H, H/2, H/4, ...``, one residual block each way.
    """

    def __init__(self, channels: int = 3, width: int = 32, mults: tuple[int, ...] = (1, 2, 2), emb: int = 64):
        super().__init__()
        self.embed = _SigmaEmbedding(emb)
        widths = [width * m for m in mults]
        self.conv_in = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        cin = widths[0]
        for i, w in enumerate(widths):
            self.down.append(_ResBlock(cin, w, emb))
            self.pool.append(nn.Conv2d(w, w, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity())
            cin = w
        self.mid = _ResBlock(cin, cin, emb)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(_ResBlock(cin + w, w, emb))
            self.unpool.append(nn.Upsample(scale_factor=2, mode="nearest") if i > 0 else nn.Identity())
            cin = w
        self.out = nn.Sequential(nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).expand(y.shape[0])
        s = sigma.reshape(-1, 1, 1, 1)
        e = self.embed(sigma)
        h = self.conv_in((y - 0.5) / torch.sqrt(SIGMA_DATA**2 + s**2))
        skips = []
        for block, pool in zip(self.down, self.pool):
            h = block(h, e)
            skips.append(h)
            h = pool(h)
        h = self.mid(h, e)
        for block, unpool in zip(self.up, self.unpool):
            h = unpool(block(torch.cat([h, skips.pop()], dim=1), e))
        return -self.out(h) / s  # the network predicts the noise z; the score is -z / sigma


class DnCNN(nn.Module):
    """Zhang et al.'s DnCNN (``depth`` conv layers of ``width`` channels), residual: ``y - net(y)``."""

    def __init__(self, channels: int = 3, depth: int = 17, width: int = 64):
        super().__init__()
        if depth < 3:
            raise ValueError(f"DnCNN needs depth >= 3, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        return y - self.net(y)


DENOISER_ARCHS = ("score_unet", "dncnn")


def build_denoiser(arch: str, channels: int = 3, width: int = 32, depth: int = 17) -> nn.Module:
    """``ScoreUNet(channels, width)`` or ``DnCNN(channels, depth, width)`` by name."""
    if arch == "score_unet":
        return ScoreUNet(channels, width)
    if arch == "dncnn":
        return DnCNN(channels, depth, width)
    raise ValueError(f"unknown denoiser arch {arch!r}; choose one of {DENOISER_ARCHS}")
