"""A mechanism map drawn over its image, with a legend of the classes' area fractions.

Each tile of the map colours the part of the surface nearer its centre than any other
tile's, in its most probable class's colour, more opaque the surer it is; the data bar
below the surface stays as it is. Under the image, a legend: each class's colour, name
and area fraction, and the dominant class.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

LEGEND_ROW_PX = 18
MAX_OPACITY = 0.55


def class_colours(count: int) -> np.ndarray:
    """(count, 3) RGB colours in [0, 1], matplotlib's ``tab10`` (distinct for 10)."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return np.array([palette(i % 10)[:3] for i in range(count)])


def cell_edges(starts: list[float], tile: float, limit: int) -> list[int]:
    """Edges of the cells around tile centres: midways between neighbours, and the
    image's edges (0 and ``limit``)."""
    centres = [start + tile / 2 for start in starts]
    middles = [round((a + b) / 2) for a, b in itertools.pairwise(centres)]
    return [0, *middles, limit]


def map_overlay(gray: np.ndarray, found: dict[str, Any]) -> Image.Image:
    """``gray`` (H x W in [0, 1], the request image) with the map ``found`` (an
    answer's ``map``) over it and the legend under it."""
    height, width = gray.shape
    classes = list(found["classes"])
    probabilities = np.asarray(found["probabilities"], dtype=np.float32)
    tile = float(found["tile_px"])
    surface = min(height, round(max(found["tops"]) + tile))
    rows = cell_edges(list(found["tops"]), tile, surface)
    cols = cell_edges(list(found["lefts"]), tile, width)
    colours = class_colours(len(classes))
    picture = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            best = int(probabilities[i, j].argmax())
            weight = MAX_OPACITY * float(probabilities[i, j, best])
            cell = picture[rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            cell[:] = (1 - weight) * cell + weight * colours[best]
    image = Image.fromarray(np.round(picture * 255).astype(np.uint8))
    return _with_legend(image, classes, found, colours)


def _with_legend(
    image: Image.Image, classes: list[str], found: dict[str, Any], colours: np.ndarray
) -> Image.Image:
    lines = len(classes) + 1
    legend_height = lines * LEGEND_ROW_PX + 8
    canvas = Image.new("RGB", (max(image.width, 260), image.height + legend_height), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = image.height + 4
    for index, name in enumerate(classes):
        y = top + index * LEGEND_ROW_PX
        colour = tuple(round(float(c) * 255) for c in colours[index])
        draw.rectangle((6, y + 2, 20, y + 14), fill=colour, outline="black")
        draw.text((28, y + 2), f"{name}: {100 * found['fractions'][name]:.1f} %", fill="black")
    draw.text(
        (6, top + len(classes) * LEGEND_ROW_PX + 2), f"dominant: {found['dominant']}", fill="black"
    )
    return canvas
