"""A description of the machine and software the benchmark ran on."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import psutil


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu (no CUDA device)"


def describe_machine() -> dict[str, str]:
    """CPU count and model, memory, OS, Python/torch/torchvision/flwr versions, device."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpus": f"{os.cpu_count()} (usable by this process: {usable})",
        "cpu model": _cpu_model(),
        "memory": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "flwr": _version("flwr"),
        "device": _device(),
    }
