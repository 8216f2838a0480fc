"""Preprocessing that every model carries: input size, normalisation, channels, and the
augmentation it was trained with.

The same :class:`Preprocessing` is stored in checkpoints and read back at inference
time, so a served model prepares images exactly as it was trained (as timm does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocessing:
    """How a grayscale image in [0, 1] becomes the model's input tensor."""

    image_size: int
    mean: float = 0.5
    std: float = 0.25
    in_channels: int = 1
    # Training-time transforms (``train.augment``, see augmentation.py), recorded so that a
    # model says what it was trained to be invariant to; inference never applies them.
    augmentation: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"model.image_size={self.image_size} is too small; use 8 or more")
        if self.std <= 0:
            raise ValueError(f"preprocessing std={self.std} must be positive")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints and metadata files."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict` (a model saved before augmentation was recorded has
        none)."""
        augmentation = tuple(values.get("augmentation", ()))
        return cls(**{**values, "augmentation": augmentation})

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """Resize a float HxW image in [0, 1] and normalise it to a (C, S, S) tensor."""
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        if tensor.shape[-2:] != (self.image_size, self.image_size):
            tensor = F.interpolate(
                tensor,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        tensor = (tensor[0] - self.mean) / self.std
        return tensor.expand(self.in_channels, -1, -1).contiguous()
