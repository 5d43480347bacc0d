"""What produced a result: versions, git commit, device, threads."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from .version import __version__

__all__ = ["git_commit", "device_name", "provenance", "default_device", "cpu_features", "CPU_FLAGS"]


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


#: CPU features that decide which precisions and kernels are fast for inference.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


@lru_cache(maxsize=None)
def cpu_features() -> dict[str, object]:
    """This CPU's relevant instruction-set features (from ``/proc/cpuinfo``) and the SIMD level
    PyTorch dispatches to (``torch.backends.cpu.get_cpu_capability()``)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 -- older torch
        capability = "unknown"
    return {"torch_capability": capability, **{f: f in flags for f in CPU_FLAGS}}


def device_name(device: torch.device | str | None = None) -> str:
    """A readable name of the device, e.g. ``NVIDIA H100 80GB HBM3`` or ``cpu: <model> (2 threads)``
    (``(1 thread)`` on one)."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu: {_cpu_model()} ({threads} thread{'' if threads == 1 else 's'})"


def provenance(device: torch.device | str | None = None) -> dict[str, str]:
    """Versions, commit, device and threads, for a provenance cell or an artifact's metadata."""
    import numpy
    import scipy

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
