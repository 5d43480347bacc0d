"""Datasets as in-memory uint8 tensors, served as float images in [0, 1] (no normalization).

Data come from a data root in torchvision's on-disk layout: ``$RSBOOK_DATA`` if set (never
downloads), else a per-user cache folder (``$XDG_CACHE_HOME/rsbook/data``) where torchvision
downloads them if a network exists (into a temporary folder beside it, moved into place when
complete: a failed download leaves nothing behind). Normalization is the first layer of every model
(:mod:`rsbook.models.classifiers`), so noise and radii are in [0, 1]-pixel units.

Small subsets ship inside the package, checked equal to torchvision's data by a test:
every 20th image of the CIFAR-10 and MNIST test sets (500 each, :func:`embedded_test_subset`)
and the first 1,000 images of each training set (:func:`load_train_subset`). So the book's
``cpu`` profile, its ``smoke`` and ``dry_run`` profiles and the tests need no dataset at all;
only training at the ``cpu`` or ``paper`` profile (and test subsets other than every
20k-th image) read the full datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "NUM_CLASSES",
    "TRAIN_SIZES",
    "TEST_SIZES",
    "DatasetNotFoundError",
    "ImageDataset",
    "data_root",
    "load_dataset",
    "test_subset",
    "embedded_test_subset",
    "embedded_train_subset",
    "load_train_subset",
    "set_data_root",
    "load_imagenet",
    "imagenet_subset",
]

#: Datasets that ``load_dataset`` reads (ImageNet goes through ``load_imagenet``).
DATASETS = {"cifar10": {"shape": (3, 32, 32)}, "mnist": {"shape": (1, 28, 28)}}
NUM_CLASSES = {"cifar10": 10, "mnist": 10, "imagenet": 1000}
TRAIN_SIZES = {"cifar10": 50_000, "mnist": 60_000}
TEST_SIZES = {"cifar10": 10_000, "mnist": 10_000}
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "_data"  # rsbook/_data, shipped with the package
EMBEDDED_EVERY = 20
EMBEDDED_TRAIN = 1000  # the first images of each training set that ship with the package

_HOW_TO = (
    "Set RSBOOK_DATA to a folder in torchvision's layout (cifar-10-batches-py/ and MNIST/raw/), "
    "e.g. `export RSBOOK_DATA=../shared/data`, or unset it on a machine with a network so that "
    "torchvision downloads into ~/.cache/rsbook/data."
)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not in the data root and cannot be downloaded."""


def data_root() -> tuple[Path, bool]:
    """The data root and whether downloading into it is allowed (only for the cache folder)."""
    env = os.environ.get("RSBOOK_DATA")
    if env:
        return Path(env).expanduser(), False
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rsbook" / "data"
    return cache, True


def set_data_root(path: str | Path, source: str = "data_root") -> Path:
    """Use ``path`` as the data root (sets ``RSBOOK_DATA``), after checking that it holds data.

    ``source`` names what the user set (e.g. a notebook's ``data_root`` parameter), so that a
    later missing-dataset error points at it rather than at ``RSBOOK_DATA``.

    Raises:
        DatasetNotFoundError: if ``path`` is not a folder holding CIFAR-10 or MNIST in
            torchvision's layout.
    """
    root = Path(path).expanduser()
    layout = "cifar-10-batches-py/ or MNIST/raw/ (torchvision's layout)"
    if not root.is_dir():
        raise DatasetNotFoundError(f"{source}={str(path)!r} is not a folder; give a folder holding {layout}, or leave {source} empty to use $RSBOOK_DATA")
    if not ((root / "cifar-10-batches-py").is_dir() or (root / "MNIST" / "raw").is_dir()):
        raise DatasetNotFoundError(f"{source}={str(path)!r} holds neither {layout}; point {source} at the folder that does")
    os.environ["RSBOOK_DATA"] = str(root.resolve())
    os.environ["RSBOOK_DATA_SOURCE"] = source  # named by later errors; kernels and subprocesses inherit both
    return root


@dataclass
class ImageDataset:
    """Images held as uint8 ``(N, C, H, W)`` with int64 labels and their original indices.

    ``dataset[i]`` gives ``(float image in [0, 1], label)``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if self.labels.shape != (len(self.images),):
            raise ValueError("labels must have one entry per image")
        if self.indices is None:
            self.indices = torch.arange(len(self.images))
        self.labels = self.labels.long()
        self.indices = self.indices.long()

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.name] if self.name in NUM_CLASSES else int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div_(255), int(self.labels[i])

    def subset(self, positions: torch.Tensor | np.ndarray | list[int]) -> "ImageDataset":
        """The images at the given positions (their original indices are kept)."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        return ImageDataset(self.name, self.images[pos], self.labels[pos], self.indices[pos])

    def every(self, k: int, start: int = 0) -> "ImageDataset":
        """Cohen et al.'s deterministic test subset: every ``k``-th image from ``start``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self.subset(torch.arange(start, len(self), k))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        indices: bool = False,
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield ``(float images in [0, 1], labels)`` batches on ``device`` (and, with
        ``indices``, the images' positions in this dataset as a third element).

        ``augment`` applies the CIFAR recipe (random crop with 4-pixel zero padding, horizontal
        flip) on whole batches; all randomness comes from ``generator``.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for s in range(0, stop, batch_size):
            idx = order[s : s + batch_size]
            x = self.images[idx]
            if augment:
                x = random_crop_flip(x, pad=4, generator=generator)
            out = (x.to(device, non_blocking=True).float().div_(255), self.labels[idx].to(device))
            yield (*out, idx) if indices else out


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``pad``-padded crop and horizontal flip of a batch ``(B, C, H, W)``, vectorized."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _torchvision_dataset(name: str, train: bool, root: Path, download: bool):
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "mnist": torchvision.datasets.MNIST}[name]
    try:
        return cls(root=str(root), train=train, download=False)
    except (RuntimeError, FileNotFoundError) as exc:
        if not download:
            src = os.environ.get("RSBOOK_DATA_SOURCE", "RSBOOK_DATA")
            how = _HOW_TO if src == "RSBOOK_DATA" else f"Point {src} at a folder in torchvision's layout (cifar-10-batches-py/ and MNIST/raw/)."
            raise DatasetNotFoundError(f"{name} ({'train' if train else 'test'}) was not found under {root} (from {src}). {how}") from exc
    try:
        _download(cls, train, root)
    except Exception as exc:  # no network, proxy refusal, ...
        raise DatasetNotFoundError(
            f"{name} is not under {root} and could not be downloaded ({type(exc).__name__}: {exc}). {_HOW_TO}"
        ) from exc
    return cls(root=str(root), train=train, download=False)


def _download(cls, train: bool, root: Path) -> None:
    """Download a torchvision dataset into ``root``, leaving nothing behind if it fails.

    The download goes into a fresh temporary folder beside ``root``; only when it is complete
    are its entries moved into ``root`` (created then). On any failure the temporary folder,
    and every folder this created on the way to it, are removed.
    """
    import shutil
    import tempfile

    made = [p for p in (root.parent, *root.parent.parents) if not p.exists()]  # the folders created here, innermost first
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-download-", dir=root.parent))
    try:
        cls(root=str(tmp), train=train, download=True)
        root.mkdir(exist_ok=True)
        for entry in tmp.iterdir():
            target = root / entry.name
            if target.is_dir() and entry.is_dir():  # e.g. MNIST/ when another split is already there
                for sub in entry.rglob("*"):
                    dest = target / sub.relative_to(entry)
                    if sub.is_dir():
                        dest.mkdir(exist_ok=True)
                    elif not dest.exists():
                        os.replace(sub, dest)
            elif not target.exists():
                os.replace(entry, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            try:
                folder.rmdir()  # only if still empty: another process may have written there meanwhile
            except OSError:
                break
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def load_dataset(name: str, train: bool, root: str | Path | None = None) -> ImageDataset:
    """CIFAR-10 or MNIST from the data root, decoded once into memory as uint8.

    Raises:
        DatasetNotFoundError: if the files are missing (the message says how to get them).
    """
    name = name.lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} (ImageNet: load_imagenet)")
    if root is None:
        root, download = data_root()
    else:
        root, download = Path(root), False
    ds = _torchvision_dataset(name, train, Path(root), download)
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.permute(0, 3, 1, 2).contiguous() if name == "cifar10" else data.unsqueeze(1).contiguous()
    return ImageDataset(name, images, torch.as_tensor(np.asarray(ds.targets)))


def _embedded(name: str, file: str, what: str) -> ImageDataset:
    path = EMBEDDED_DIR / f"{name.lower()}_{file}.npz"
    if not path.exists():
        raise DatasetNotFoundError(f"no embedded {what} for {name!r} (looked for {path})")
    with np.load(path) as z:
        return ImageDataset(name.lower(), torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]), torch.from_numpy(z["indices"]))


def embedded_test_subset(name: str) -> ImageDataset:
    """The shipped every-20th test subset (500 images) of ``cifar10`` or ``mnist``."""
    return _embedded(name, f"test_every{EMBEDDED_EVERY}", "test subset")


def embedded_train_subset(name: str) -> ImageDataset:
    """The shipped first :data:`EMBEDDED_TRAIN` images of the ``cifar10`` or ``mnist`` training set."""
    return _embedded(name, f"train_first{EMBEDDED_TRAIN}", "training subset")


def load_train_subset(name: str, first: int = 0, root: str | Path | None = None) -> ImageDataset:
    """The first ``first`` training images (all of them for 0), from the shipped copy when it covers them."""
    if first < 0:
        raise ValueError(f"first must be >= 0, got {first}")
    if 0 < first <= EMBEDDED_TRAIN and root is None:
        return embedded_train_subset(name).subset(torch.arange(first))
    full = load_dataset(name, train=True, root=root)
    return full.subset(torch.arange(min(first, len(full)))) if first else full


def test_subset(name: str, every: int = EMBEDDED_EVERY, root: str | Path | None = None) -> ImageDataset:
    """Every ``every``-th test image; served from the embedded copy when it covers the request."""
    if every % EMBEDDED_EVERY == 0 and root is None:
        return embedded_test_subset(name).every(every // EMBEDDED_EVERY)
    return load_dataset(name, train=False, root=root).every(every)


def load_imagenet(root: str | Path, split: str = "val", resolution: int = 224):
    """ImageNet as a torchvision ``ImageFolder`` (``root/split/<wnid>/*.JPEG``), images in [0, 1].

    Standard evaluation transform: resize to 256, center crop to ``resolution``. Not held in
    memory (too large).
    """
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    path = Path(root) / split
    if not path.is_dir():
        raise DatasetNotFoundError(f"ImageNet split {split!r} not found at {path}; pass the folder that holds train/ and val/")
    return ImageFolder(str(path), transform=T.Compose([T.Resize(256), T.CenterCrop(resolution), T.ToTensor()]))


def imagenet_subset(root: str | Path, split: str = "val", every: int = 100, resolution: int = 224) -> ImageDataset:
    """Every ``every``-th image of an ImageNet split (:func:`load_imagenet`'s transform), held in
    memory as an :class:`ImageDataset` named ``"imagenet"`` so that the certification runner and
    the trainers take it like CIFAR-10 (500 validation images at 224 px: 75 MB).

    Raises:
        DatasetNotFoundError: if ``root/split`` is missing or holds no images.
    """
    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every}")
    folder = load_imagenet(root, split, resolution)
    if len(folder) == 0:
        raise DatasetNotFoundError(f"no images under {Path(root) / split}; expected {split}/<wnid>/*.JPEG")
    picks = range(0, len(folder), every)
    images = torch.empty((len(picks), 3, resolution, resolution), dtype=torch.uint8)
    labels = torch.empty(len(picks), dtype=torch.long)
    for j, i in enumerate(picks):
        x, y = folder[i]
        images[j] = x.mul(255).round_().to(torch.uint8)
        labels[j] = y
    return ImageDataset("imagenet", images, labels, torch.tensor(list(picks)))
