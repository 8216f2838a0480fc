"""Preprocessing that every model carries: input size, normalisation, channels, the
augmentation it was trained with and, for a model of physical scale, its micrometres
per pixel and its tiles.

Two ways to turn a micrograph into model input:

- whole image (``pixel_size_um`` 0, the default): the image squashed to
  ``image_size`` x ``image_size``;
- physical scale (``pixel_size_um`` > 0): the data bar cut off, the rest resampled to
  ``pixel_size_um`` micrometres per pixel, and ``image_size`` tiles cut from it (random
  ones in training; a ``tile_grid`` x ``tile_grid`` grid, probabilities averaged, in
  evaluation and serving).

The same :class:`Preprocessing` is stored in checkpoints and read back at inference
time, so a served model prepares images exactly as it was trained (as timm does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fractofl.core.images.physical_scale import ScaleError, at_physical_scale
from fractofl.core.images.scale import SemScale
from fractofl.core.images.tiles import check_fits, grid_tiles

# Fields of a physical-scale model; a whole-image model's dict leaves them out, so its
# metadata reads as it did before they existed.
PHYSICAL_FIELDS = ("pixel_size_um", "tile_grid")


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
    pixel_size_um: float = 0.0  # > 0: physical scale (micrometres per pixel) and tiles
    tile_grid: int = 3  # evaluation and serving: tile_grid x tile_grid tiles per image

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"model.image_size={self.image_size} is too small; use 8 or more")
        if self.std <= 0:
            raise ValueError(f"preprocessing std={self.std} must be positive")
        if self.pixel_size_um < 0:
            raise ValueError(
                f"model.pixel_size_um={self.pixel_size_um} must be 0 (whole image) or a "
                "positive number of micrometres per pixel"
            )
        if self.tile_grid < 1:
            raise ValueError(f"model.tile_grid={self.tile_grid} must be at least 1")

    @property
    def physical(self) -> bool:
        """Whether images are brought to a physical scale and cut into tiles."""
        return self.pixel_size_um > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints and metadata files."""
        values = asdict(self)
        if not self.physical:
            for name in PHYSICAL_FIELDS:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict` (a model saved before augmentation was recorded has
        none)."""
        augmentation = tuple(values.get("augmentation", ()))
        return cls(**{**values, "augmentation": augmentation})

    def cache_key(self) -> dict[str, Any]:
        """The fields that decide :meth:`prepare`'s output: images prepared with equal
        keys can share an on-disk cache (normalisation and tiles come when read)."""
        if self.physical:
            return {"pixel_size_um": self.pixel_size_um, "crop": "databar"}
        return {"image_size": self.image_size}

    def prepare(
        self, image: np.ndarray, scale: SemScale | None = None, source: str = ""
    ) -> np.ndarray:
        """The cacheable step: the whole image at model size, or (physical scale) the
        image without its data bar at ``pixel_size_um``; float32, not normalised.
        ScaleError for an image of unknown scale, a data bar covering it, or (physical
        scale) an image smaller than one tile."""
        if not self.physical:
            return self.at_model_scale(image)
        if scale is None:
            raise ScaleError(
                f"{source or 'the image'}: a physical-scale model needs its pixel size"
            )
        prepared = at_physical_scale(image, scale, self.pixel_size_um, source or "the image")
        check_fits(*prepared.shape, self.image_size, source or "the image")
        return prepared

    def model_input(self, prepared: np.ndarray) -> torch.Tensor:
        """Prepared pixels as the model's input: (C, S, S) for a whole-image model;
        (tile_grid², C, S, S), the evaluation tiles, for a physical-scale one."""
        if not self.physical:
            return self.normalise(prepared)
        return self.normalise(grid_tiles(prepared, self.image_size, self.tile_grid))

    def at_model_scale(self, image: np.ndarray) -> np.ndarray:
        """A float HxW image in [0, 1] brought to the model's input size: float32 (S, S),
        not yet normalised (what the image cache stores)."""
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        if tensor.shape[-2:] != (self.image_size, self.image_size):
            tensor = F.interpolate(
                tensor,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return tensor[0, 0].numpy()

    def normalise(self, pixels: np.ndarray) -> torch.Tensor:
        """S x S pixels (the whole image at model size, or a tile), or a stack of them
        (..., S, S), as the model's input (..., C, S, S)."""
        tensor = (torch.from_numpy(pixels).unsqueeze(-3) - self.mean) / self.std
        return tensor.expand(*tensor.shape[:-3], self.in_channels, -1, -1).contiguous()

    def to_tensor(self, image: np.ndarray, scale: SemScale | None = None) -> torch.Tensor:
        """A float HxW image in [0, 1] as model input (:meth:`prepare`, then
        :meth:`model_input`)."""
        return self.model_input(self.prepare(image, scale))
