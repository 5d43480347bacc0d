"""Shared fixtures: synthetic classifiers whose smoothed probabilities are known in closed form."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The tests never write into the checkout: no bytecode caches (here, and in the notebook kernels
# that inherit the environment) and no pytest cache (pyproject.toml: -p no:cacheprovider).
sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

# Under pytest-xdist (-n N) the workers share the cores: each gets its share of torch threads, and
# so do the notebook kernels it starts (they inherit OMP_NUM_THREADS). torch's default, a thread
# per core in every worker, oversubscribes the machine and makes the run slower than one worker.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and not os.environ.get("OMP_NUM_THREADS"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
from torch import nn

REPO = Path(__file__).resolve().parents[1]

# The slow tests' longest ones first (CI's --durations), so that the two pytest-xdist workers finish
# together instead of one running a long test alone at the end. xdist hands out tests in collection
# order and keeps two queued on each worker: the first worker takes the smoke book (the longest, on
# two kernels of its own) with a one-second test queued behind it, the second the next two longest.
LONGEST_FIRST = ("test_book_builds_with_every_chapter_at_smoke_profile", "test_a_failing_notebook_is_reported",
                 "dry_run[03_heat_smoothing]", "test_a_chapter_runs_under_torchrun", "dry_run[01_denoised_smoothing]",
                 "dry_run[A1_certification_speed]")


def _longest_first(item) -> int:
    return next((k for k, name in enumerate(LONGEST_FIRST) if name in item.nodeid), len(LONGEST_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=_longest_first)  # stable: the others keep their order


class ThresholdClassifier(nn.Module):
    """Class 1 if ``x_0 > t`` else class 0, on the first coordinate of a flattened image.

    Under noise eps, ``P(f(x + eps) = 1) = P(eps_0 > t - x_0)``, so the smoothed probability and the
    exact robust radius (distance to the hyperplane ``x_0 = t``, the same in l1 and l2) are known.
    """

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = threshold
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, 0] - self.threshold
        return torch.stack([-z, z], dim=1)


class CountingClassifier(nn.Module):
    """Wraps a classifier, counts the samples it sees, and raises after ``fail_after`` calls."""

    def __init__(self, inner: nn.Module, fail_after: int | None = None):
        super().__init__()
        self.inner = inner
        self.samples = 0
        self.calls = 0
        self.fail_after = fail_after

    def forward(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.samples += x.shape[0]
        return self.inner(x)


@pytest.fixture
def threshold_classifier():
    return ThresholdClassifier()


@pytest.fixture
def data_root() -> Path:
    """The offline datasets (``$RSBOOK_DATA`` or ../shared/data); skips if absent."""
    root = Path(os.environ.get("RSBOOK_DATA", REPO.parent / "shared" / "data"))
    if not (root / "cifar-10-batches-py").is_dir():
        pytest.skip(f"no datasets at {root} (set RSBOOK_DATA)")
    return root
