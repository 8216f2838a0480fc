"""Tiles: the model's square inputs cut from an image at the model's physical scale.

Training samples tiles at random places of each image; evaluation and serving take a
fixed grid of tiles spread over the whole image and average their class probabilities,
so that member, coordinator and endpoint judge an image the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class TileError(ValueError):
    """An image smaller than one tile (it is skipped; the message says how to fix it)."""


def check_fits(height: int, width: int, size: int, source: str) -> None:
    """TileError when an image of ``height`` x ``width`` cannot hold one ``size`` tile."""
    if height < size or width < size:
        raise TileError(
            f"{source}: {width}x{height} pixels at the model's scale, smaller than one "
            f"{size}x{size} tile; use a finer model.pixel_size_um or a smaller model.image_size"
        )


def grid_positions(height: int, width: int, size: int, grid: int) -> list[tuple[int, int]]:
    """``grid`` x ``grid`` tile corners (top, left) spread evenly over the image, from
    edge to edge (tiles overlap where the image is small)."""
    tops = np.linspace(0, height - size, grid).round().astype(int)
    lefts = np.linspace(0, width - size, grid).round().astype(int)
    return [(int(top), int(left)) for top in tops for left in lefts]


def random_position(height: int, width: int, size: int) -> tuple[int, int]:
    """A tile corner drawn from torch's generator (seeded per run: reproducible)."""
    top = int(torch.randint(0, height - size + 1, ()).item())
    left = int(torch.randint(0, width - size + 1, ()).item())
    return top, left


def grid_tiles(pixels: np.ndarray, size: int, grid: int) -> np.ndarray:
    """The grid's tiles of a 2-D image: float32 (grid*grid, size, size)."""
    height, width = pixels.shape
    return np.stack(
        [
            pixels[t : t + size, left : left + size]
            for t, left in grid_positions(height, width, size, grid)
        ]
    ).astype(np.float32, copy=False)


def tile_mean_log_probabilities(model: nn.Module, tiles: torch.Tensor) -> torch.Tensor:
    """Log of each image's class probabilities averaged over its tiles: ``tiles`` is
    (B, T, C, S, S), the result (B, classes)."""
    batch, count = tiles.shape[:2]
    log_probabilities = torch.log_softmax(model(tiles.flatten(0, 1)).float(), dim=1)
    return torch.logsumexp(log_probabilities.view(batch, count, -1), dim=1) - math.log(count)
