"""The mechanism map: a physical-scale model's tiles over the whole surface of an image.

A fractographer reads a surface region by region (a fatigue zone ending in ductile
overload, cleavage islands among dimples). The map classifies overlapping tiles, each the
model's input at the model's scale, half a tile apart, over the whole image without its
data bar, and gives each tile's calibrated class probabilities, and the share of the
tiles each class is the most probable in: the mechanism's area fraction (the tiles are
spread evenly, so each stands for the same area). A large image's tiles are spread
further apart, so that at most ``max_tiles`` are classified (a coarser map, the same
time bound). It ships in the artifact (imports only torch and numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

MAP_MAX_TILES = 1024
"""Tiles classified for one map at most, so a request's time stays bounded whatever the
image's size: 768 64-px tiles of ResNet-18 took 1.3 s on 2 CPU cores, 52 ms on an H200
(bench/RESULTS.md, GPU check)."""
MAP_BATCH = 64


@dataclass(frozen=True)
class MechanismMap:
    """Tiles over a prepared image (at the model's scale).

    Attributes
    ----------
    tops, lefts
        The tiles' corners, in prepared-image pixels (rows x cols tiles).
    size
        A tile's side in prepared-image pixels (the model's input size).
    probabilities
        (rows, cols, classes): each tile's calibrated class probabilities.
    """

    tops: tuple[int, ...]
    lefts: tuple[int, ...]
    size: int
    probabilities: np.ndarray

    @property
    def fractions(self) -> np.ndarray:
        """(classes,): the share of tiles whose most probable class each class is."""
        winners = self.probabilities.argmax(axis=-1).ravel()
        counts = np.bincount(winners, minlength=self.probabilities.shape[-1])
        return counts / max(1, winners.size)


def tile_starts(length: int, size: int, max_count: int) -> list[int]:
    """Tile starts along one side: half a tile apart (or further, to stay within
    ``max_count``), the last one at the far edge, so the whole side is covered."""
    if length <= size:
        return [0]
    span = length - size
    stride = max(1, size // 2)
    while span // stride + 2 > max_count:
        stride *= 2
    starts = list(range(0, span + 1, stride))
    if starts[-1] != span:
        starts.append(span)
    return starts


def map_positions(
    height: int, width: int, size: int, max_tiles: int
) -> tuple[list[int], list[int]]:
    """Rows and columns of tile corners over a ``height`` x ``width`` image, at most
    ``max_tiles`` tiles in all (spread as evenly along both sides)."""
    per_side = max(2, int(max_tiles**0.5))
    tops = tile_starts(height, size, per_side)
    lefts = tile_starts(width, size, max(2, max_tiles // len(tops)))
    return tops, lefts


@torch.inference_mode()
def mechanism_map(
    network: nn.Module,
    normalise: Callable[[np.ndarray], torch.Tensor],
    prepared: np.ndarray,
    size: int,
    temperature: float,
    device: torch.device,
    max_tiles: int = MAP_MAX_TILES,
) -> MechanismMap:
    """Classify the tiles of ``prepared`` (H x W at the model's scale, not normalised);
    ``normalise`` is the preprocessing's (pixels -> model input)."""
    height, width = prepared.shape
    tops, lefts = map_positions(height, width, size, max_tiles)
    corners = [(top, left) for top in tops for left in lefts]
    rows: list[torch.Tensor] = []
    for start in range(0, len(corners), MAP_BATCH):
        tiles = np.stack(
            [prepared[t : t + size, le : le + size] for t, le in corners[start : start + MAP_BATCH]]
        ).astype(np.float32, copy=False)
        batch = normalise(tiles).to(device)
        rows.append(torch.softmax(network(batch).float() / temperature, dim=1).cpu())
    probabilities = torch.cat(rows).numpy().reshape(len(tops), len(lefts), -1)
    return MechanismMap(tuple(tops), tuple(lefts), size, probabilities)
