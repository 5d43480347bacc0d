"""A certification run for the torchrun tests (``test_distributed.py``): launched as
``torchrun --nproc-per-node=K tests/torchrun_certify.py STORE [--sequential] [--kill RANK ROWS]``.

Certifies a synthetic dataset with a threshold classifier through ``certification_log`` into the
artifact store ``STORE`` (with the sequential certifier if asked), and computes a per-image table
with per-image noise through ``sharded_table`` (as the attack runner does) into ``STORE/table.tsv``. With ``--kill``, rank ``RANK``
dies (``os._exit``, as a killed process would) once its shard holds ``ROWS`` rows.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ThresholdClassifier  # noqa: E402

from rsbook.infra.artifacts import ArtifactStore  # noqa: E402
from rsbook.core.certify import Smooth  # noqa: E402
from rsbook.core.noise import Gaussian  # noqa: E402
from rsbook.runs.runner import CertifyConfig, certification_log  # noqa: E402
from rsbook.core.streams import image_generator  # noqa: E402
from rsbook.runs.shards import sharded_table  # noqa: E402
from rsbook.core.sequential import Sequential  # noqa: E402
from rsbook.infra.data import ImageDataset  # noqa: E402
from rsbook.infra.distributed import world  # noqa: E402

IMAGES = 13  # not a multiple of 3: the shards differ in size


@dataclass(frozen=True)
class Toy:
    threshold: float = 0.5


def dataset() -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (IMAGES, 1, 4, 4), generator=g, dtype=torch.uint8)
    labels = (images[:, 0, 0, 0].float() / 255 > 0.5).long()
    return ImageDataset("synthetic", images, labels, indices=torch.arange(100, 100 + 7 * IMAGES, 7))


def config(sequential: bool = False) -> CertifyConfig:
    seq = Sequential(radii=(0.05, 0.2), first=32) if sequential else None
    return CertifyConfig(Toy(), Gaussian(0.3), n0=20, n=300 if seq is None else 2000, alpha=0.01, dataset="synthetic",
                         every=7, seed=3, sequential=seq)


class Dies(nn.Module):
    """The classifier, on a rank that dies once ``shard`` holds ``rows`` rows."""

    def __init__(self, inner: nn.Module, shard: Path, rows: int):
        super().__init__()
        self.inner, self.shard, self.rows = inner, shard, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shard.exists() and len(self.shard.read_text().splitlines()) - 1 >= self.rows:
            os._exit(17)
        return self.inner(x)


def run(store: ArtifactStore, kill: tuple[int, int] | None = None, sequential: bool = False):
    cfg = config(sequential)
    model: nn.Module = ThresholdClassifier(0.5)
    w = world()
    if kill is not None and w.rank == kill[0]:
        model = Dies(model, store.work_dir(cfg) / f"log.partial.rank{w.rank}-of-{w.size}.tsv", kill[1])
    return certification_log(cfg, Smooth(model, 2, ("gaussian", 0.3)), dataset(), store, batch_size=50, progress=False)


@dataclass(frozen=True)
class Once:
    nested: bool = False


def computed_once(store: ArtifactStore) -> str:
    """A stored result (not sharded) whose computation loads another stored result: rank 0 computes
    both, alone, and every rank then reads them. Each computation appends its rank's world to
    ``STORE/computed.txt``, so a test can count them."""

    def compute(out: Path, work: Path, nested: bool) -> None:
        with open(Path(store.root) / "computed.txt", "a") as f:
            f.write(f"{'nested' if nested else 'outer'} on rank {os.environ.get('RANK', 0)}: {world()}\n")
        if not nested:
            inner, _ = store.load_or_compute(Once(True), lambda o, w: compute(o, w, True), "txt")
            out.write_text("outer after " + inner.read_text())
        else:
            out.write_text("inner")

    path, _ = store.load_or_compute(Once(), lambda o, w: compute(o, w, False), "txt")
    return path.read_text()


def table(folder: Path):
    """A per-image table whose rows depend only on each image's own generator: what ``sharded_table`` splits."""
    images = [int(i) for i in dataset().indices]

    def rows(positions: list[int]):
        import pandas as pd

        idx = [images[p] for p in positions]
        draws = [float(torch.randn((), generator=image_generator(5, i, "cpu"))) for i in idx]
        return pd.DataFrame({"idx": idx, "draw": draws, "big": [1e300 * d for d in draws]})

    return sharded_table(folder / "table.tsv", images, rows, {"what": "toy table"}, "cpu")


if __name__ == "__main__":
    args = sys.argv[1:]
    kill = (int(args[args.index("--kill") + 1]), int(args[args.index("--kill") + 2])) if "--kill" in args else None
    if kill is None and "--sequential" not in args:
        assert computed_once(ArtifactStore(args[0])) == "outer after inner"
    run(ArtifactStore(args[0]), kill, "--sequential" in args)
    if kill is None and "--sequential" not in args:
        table(Path(args[0])).to_csv(Path(args[0]) / "table.result.tsv", sep="\t", index=False)
