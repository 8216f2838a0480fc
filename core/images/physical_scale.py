"""Bringing a micrograph to one physical scale: the data bar cut off, the rest resampled
to the model's micrometres per pixel.

Two micrographs of the same surface at 500x and 5,000x differ tenfold in pixels per
micrometre; a model that sees both at one scale learns features of the surface
(striation spacing, dimple size), not of the magnification, and never sees the data
bar's text and scale bar, which it could otherwise learn as a shortcut.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fractofl.core.images.databar import databar_rows
from fractofl.core.images.scale import SCALE_FILE, SemScale, scaled_shape

MAX_PREPARED_PIXELS = 50_000_000  # as imageio's limit on a decoded image


class ScaleError(ValueError):
    """An image cannot be brought to the model's scale; the message says why and what
    to do (the image is skipped, never the run)."""


def crop_databar(pixels: np.ndarray, rows: int, source: str) -> np.ndarray:
    """The image without its bottom ``rows`` (ScaleError when nothing would be left)."""
    height = pixels.shape[0]
    if rows >= height:
        raise ScaleError(
            f"{source}: its data bar ({rows} rows) covers the whole image ({height} rows); "
            "check DatabarHeight in its metadata or databar_px in its scale.yaml"
        )
    return pixels[: height - rows] if rows else pixels


def rescale(pixels: np.ndarray, from_um: float, to_um: float) -> np.ndarray:
    """``pixels`` of ``from_um`` micrometres resampled to ``to_um`` per pixel (float32,
    antialiased when shrinking)."""
    height, width = pixels.shape
    size = scaled_shape(height, width, from_um, to_um)
    if size[0] * size[1] > MAX_PREPARED_PIXELS:
        raise ScaleError(
            f"{width}x{height} pixels of {from_um:g} um resampled to {to_um:g} um per pixel "
            f"would be {size[1]}x{size[0]} pixels, above {MAX_PREPARED_PIXELS}; check the "
            "pixel size (a scale.yaml typo?)"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    if size == (height, width):
        return tensor[0, 0].numpy()
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[0, 0].numpy()


def at_physical_scale(pixels: np.ndarray, scale: SemScale, to_um: float, source: str) -> np.ndarray:
    """The image without its data bar, at ``to_um`` micrometres per pixel. ScaleError
    when its scale is unknown or its data bar covers it."""
    if scale.pixel_size_um is None:
        why = scale.source or "no metadata, sidecar or scale.yaml gives it"
        raise ScaleError(
            f"{source}: no known pixel size ({why}); put a {SCALE_FILE} with pixel_size_um "
            "in its folder"
        )
    cropped = crop_databar(pixels, databar_rows(pixels, scale), source)
    return rescale(cropped, scale.pixel_size_um, to_um)
