"""Classifiers whose first layer is the dataset normalization.

Every model takes images in [0, 1] (noise already added) and returns logits.

* ``cifar_resnet{20,56,110}``: He et al. (2016) CIFAR ResNets (depth 6n+2, 16/32/64 channels,
  1x1-conv projection shortcuts), the architecture of Cohen et al.'s CIFAR-10 results.
* ``cnn4``: a small 4-conv-layer CNN (32-32-64-64 channels, two max-pools, two 256-unit dense
  layers). Paper 4 says only "mainly composed of 4 convolutional layers"; the widths are this
  book's reconstruction. It is the ``cpu``-profile workhorse.
* ``lenet``: a LeNet-style MNIST CNN (two 5x5 convs with pooling, one 256-unit dense layer).
* ``cifar_resnet34``: torchvision's ResNet-34 with a CIFAR stem (3x3 stride-1 conv, no
  max-pool), the HeatSmoothing paper's CIFAR-10 model.
* ``resnet50``: torchvision's ResNet-50 for ImageNet (random init; no hub download).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["Normalize", "NormalizationMismatchError", "MEANS_STDS", "ARCHS", "build_model", "for_inference", "load_weights", "CNN4", "LeNet", "CifarResNet"]

MEANS_STDS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "mnist": ((0.1307,), (0.3081,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
IN_CHANNELS = {"cifar10": 3, "mnist": 1, "imagenet": 3}


class NormalizationMismatchError(RuntimeError):
    """A state dict carries normalization constants other than the model's (not even to fp16 precision)."""


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the first layer of a model.

    ``mean`` and ``std`` are constants of the model, not weights: non-persistent buffers set
    from the given values at construction, so a model loaded from a state dict (even one
    stored in fp16) normalizes with exactly the documented constants. A state dict that still
    carries them (the files stored before this was so) is checked and they are dropped: values
    equal to this model's at fp16 precision are accepted, others refused with
    :class:`NormalizationMismatchError`.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for name in ("mean", "std"):
            stored = state_dict.pop(prefix + name, None)
            if stored is None:
                continue
            exact = getattr(self, name)
            same = (isinstance(stored, torch.Tensor) and stored.is_floating_point() and stored.numel() == exact.numel()
                    and torch.equal(stored.detach().cpu().reshape(-1).half(), exact.detach().cpu().reshape(-1).half()))
            if not same:
                given = stored.flatten().tolist() if isinstance(stored, torch.Tensor) else stored
                raise NormalizationMismatchError(
                    f"the state dict's normalization {name} ({prefix}{name} = {given}) is not this model's "
                    f"{tuple(round(v, 6) for v in exact.flatten().tolist())}, not even at fp16 precision: the weights "
                    "were trained with another normalization; build the model for the dataset they were trained on")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class CNN4(nn.Module):
    """Four 3x3 conv layers (32, 32, pool, 64, 64, pool) and two 256-unit dense layers."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        flat = 2 * w * (image_size // 4) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(inplace=True),
            nn.Linear(256, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet(nn.Module):
    """LeNet-style MNIST CNN: conv5(32)-pool-conv5(64)-pool-fc256-fc10."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. (2016) CIFAR ResNet of depth ``6n + 2`` (20, 56, 110, ...)."""

    def __init__(self, depth: int = 110, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def _resnet50(in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


def _cifar_resnet34(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-34 with the usual CIFAR stem (3x3 stride-1 first conv, no max-pool),
    the HeatSmoothing paper's CIFAR-10 architecture."""
    import torchvision

    net = torchvision.models.resnet34(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


ARCHS: dict[str, Callable[[int, int], nn.Module]] = {
    "cnn4": lambda c, k: CNN4(c, k, image_size=28 if c == 1 else 32),
    "lenet": lambda c, k: LeNet(c, k),
    "cifar_resnet20": lambda c, k: CifarResNet(20, c, k),
    "cifar_resnet56": lambda c, k: CifarResNet(56, c, k),
    "cifar_resnet110": lambda c, k: CifarResNet(110, c, k),
    "cifar_resnet34": _cifar_resnet34,
    "resnet50": _resnet50,
}


def build_model(arch: str, dataset: str, num_classes: int = 10) -> nn.Sequential:
    """``Sequential(Normalize(dataset), arch)``: a classifier on [0, 1] images.

    >>> build_model("cnn4", "cifar10")(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    if dataset not in MEANS_STDS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(MEANS_STDS)}")
    mean, std = MEANS_STDS[dataset]
    return nn.Sequential(Normalize(mean, std), ARCHS[arch](IN_CHANNELS[dataset], num_classes))


def for_inference(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with channels_last weights (1.6-1.8x faster convolutions on CPU).

    The function computed is unchanged up to floating-point summation order.
    """
    return model.eval().to(memory_format=torch.channels_last)


def load_weights(net: nn.Module, path: str, what: str, fix: str) -> None:
    """Load a user-supplied state dict file into ``net`` (a ``{"state_dict": ...}`` checkpoint too),
    or raise an error naming the file, the cause and ``fix``."""
    from pathlib import Path

    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"{what} weights not found at {path!r}: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- truncated, corrupt or not a torch file
        raise ValueError(f"{what} weights at {path} are not a readable PyTorch state dict "
                         f"(corrupt or truncated download?): {type(exc).__name__}: {exc}. {fix}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{what} weights at {path} do not fit the network: {first}. {fix}") from exc
