"""Device choice and seeding: CUDA when present, CPU otherwise, reproducible seeds."""

from __future__ import annotations

import random

import numpy as np
import torch

AUTO = "auto"


def resolve_device(setting: str = AUTO) -> torch.device:
    """``auto`` picks CUDA when available; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if setting == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"train.device={setting!r} but CUDA is not available here; use 'auto' or 'cpu'"
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
