"""Mixed-precision training (``train.mixed_precision``).

On a GPU, most of a training step's arithmetic can run in 16-bit floats (torch's
autocast) while the weights, and so what a member sends, stay 32-bit. ``auto`` (the
default) does that on CUDA with float16 and gradient scaling (small float16 gradients
would otherwise round to zero) and trains in full precision on a CPU, where float16 is
slow. ``bfloat16`` has float32's range, so it needs no scaling; it runs on either device.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from fractofl.core.learning.train_choices import MIXED_PRECISION

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """How a training step computes: ``dtype`` under autocast (None: float32 throughout)
    and whether the loss is scaled before the backward pass (float16)."""

    dtype: torch.dtype | None = None
    scaled: bool = False

    def autocast(self, device: torch.device) -> AbstractContextManager[object]:
        """The forward pass's context on ``device``."""
        return torch.autocast(
            device_type=device.type, dtype=self.dtype, enabled=self.dtype is not None
        )

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """The loss scaler (a pass-through when not scaled)."""
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


FULL_PRECISION = Precision()


def precision_for(setting: str, device: torch.device) -> Precision:
    """The precision ``train.mixed_precision`` asks for on ``device``; ValueError for a
    value it does not know, or float16 on a CPU."""
    if setting not in MIXED_PRECISION:
        raise ValueError(
            f"train.mixed_precision={setting!r}: choose one of {', '.join(MIXED_PRECISION)}"
        )
    on_cuda = device.type == "cuda"
    if setting == "off" or (setting == "auto" and not on_cuda):
        return FULL_PRECISION
    if setting == "auto":
        return Precision(torch.float16, scaled=True)
    if setting == "float16" and not on_cuda:
        raise ValueError(
            f"train.mixed_precision=float16 needs a CUDA device, and this member trains on "
            f"{device}: use auto (full precision on a CPU) or bfloat16"
        )
    return Precision(_DTYPES[setting], scaled=setting == "float16")
