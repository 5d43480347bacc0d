"""What produced a result: versions, git commit, device, threads."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["git_commit", "device_name", "provenance", "default_device"]


@lru_cache(maxsize=None)
def git_commit() -> str:
    """``HEAD`` of the repository holding rsbook (``+dirty`` if it has changes), else ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_device() -> torch.device:
    """``cuda`` if available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=None)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str | None = None) -> str:
    """A readable name of the device, e.g. ``NVIDIA H100 80GB HBM3`` or ``cpu: <model> (2 threads)``."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {_cpu_model()} ({torch.get_num_threads()} threads)"


def provenance(device: torch.device | str | None = None) -> dict[str, str]:
    """Versions, commit, device and threads, for a provenance cell or an artifact's metadata."""
    import numpy
    import scipy

    from . import __version__

    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover
        tv = "absent"
    return {
        "rsbook": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": tv,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "device": device_name(device),
        "threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
    }
