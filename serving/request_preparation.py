"""Bringing an image over an endpoint's request limit to the model's scale on the client.

A 16-bit SEM TIFF of 4096 x 3072 pixels is 24 MiB; a SageMaker real-time endpoint takes 6.
The endpoint's first step is to bring the image to the model's scale (a physical-scale
model: data bar cut off, resampled to its micrometres per pixel; a whole-image model:
squashed to its input size). The client takes that step itself with the same code
(:meth:`Preprocessing.prepare`) and sends the result as float32 ``.npy`` at the model's
scale, which the endpoint then uses as it is: the answer is the one the whole image gets,
nothing is lost on the way (no 8-bit or JPEG rounding).

When even that is over the limit (a physical-scale model, a large surface), the image
goes as tiles:

- the answer: the ``tile_grid`` x ``tile_grid`` evaluation tiles the endpoint would cut
  from the image, side by side in one mosaic; the endpoint's grid over the mosaic is
  exactly those tiles, so the answer is again the whole image's;
- the mechanism map: the image in overlapping pieces whose tiles lie on the whole image's
  half-tile grid, each sent with ``map=true``; their maps are joined into the whole
  image's map (finer than one request's map of a large image, which
  :data:`~fractofl.serving.mechanism_map.MAP_MAX_TILES` coarsens).

Heat maps and coordinates come back in the caller's image pixels. Imports torch (through
the preprocessing): :mod:`fractofl.serving.client` imports this module only for an image
over the limit.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from fractofl.core.images.databar import databar_rows
from fractofl.core.images.physical_scale import ScaleError
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.images.scale import SemScale
from fractofl.core.images.tiles import TileError, grid_positions
from fractofl.serving.contract import DATABAR_OPTION, PIXEL_SIZE_OPTION
from fractofl.serving.decoding import NPY_CONTENT_TYPE
from fractofl.serving.errors import EndpointError
from fractofl.serving.mechanism_map import MAP_MAX_TILES, tile_starts

NPY_HEADER_BYTES = 128
"""numpy's ``.npy`` header of a 2-D float32 array (its payload is 4 bytes a pixel)."""
MAX_PIECE_TILES_PER_SIDE = int(MAP_MAX_TILES**0.5) - 2
"""A piece's tiles per side, so that the endpoint keeps them half a tile apart (it
spreads them further when a side would have more than ``sqrt(MAP_MAX_TILES)``)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the endpoint says of its model (a ``MODEL_INFO_TYPE`` request)."""

    version: str
    preprocessing: Preprocessing

    @classmethod
    def from_json(cls, values: dict[str, Any], source: str) -> ModelInfo:
        """Parse the answer; EndpointError naming ``source`` when it is not one."""
        try:
            return cls(
                str(values["model_version"]), Preprocessing.from_dict(values["preprocessing"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EndpointError(
                f"{source} did not describe its model ({exc}); it may be older than this "
                "client: send images within its request limit"
            ) from None


@dataclass(frozen=True)
class PreparedImage:
    """An image at the model's scale, and how to map its pixels back."""

    pixels: np.ndarray
    """float32 (H', W') in [0, 1]: what the endpoint would compute first."""
    original_shape: tuple[int, int]
    databar_rows: int
    """Rows cut off the bottom of the original (its data bar)."""
    preprocessing: Preprocessing

    @property
    def content_type(self) -> str:
        """``application/x-npy`` and, for a physical-scale model, the scale it is at and
        no data bar (so the endpoint neither resamples nor crops it again)."""
        if not self.preprocessing.physical:
            return NPY_CONTENT_TYPE
        return (
            f"{NPY_CONTENT_TYPE}; {PIXEL_SIZE_OPTION}={self.preprocessing.pixel_size_um!r}; "
            f"{DATABAR_OPTION}=0"
        )

    def describe(self) -> str:
        """``4096x3072 px -> 1024x758 px at 0.2 um/px`` (or ``at 64x64, the model's input``)."""
        height, width = self.original_shape
        new_height, new_width = self.pixels.shape
        target = (
            f"at {self.preprocessing.pixel_size_um:g} um/px"
            + (f", data bar of {self.databar_rows} rows cut off" if self.databar_rows else "")
            if self.preprocessing.physical
            else "(the model's input)"
        )
        return f"{width}x{height} px -> {new_width}x{new_height} px {target}"

    def heatmap_to_original(self, heat: np.ndarray) -> np.ndarray:
        """A heat map of the prepared pixels at the original image's size (0 on the data
        bar)."""
        height, width = self.original_shape
        kept = height - self.databar_rows
        picture = Image.fromarray(np.ascontiguousarray(heat, dtype=np.float32), mode="F")
        resized = np.asarray(picture.resize((width, kept), Image.Resampling.BILINEAR))
        whole = np.zeros((height, width), dtype=np.float32)
        whole[:kept] = np.clip(resized, 0.0, 1.0)
        return whole

    def map_to_original(self, found: dict[str, Any]) -> dict[str, Any]:
        """A mechanism map in prepared pixels with its corners and side in the original
        image's pixels (as the endpoint gives them for an image it prepared itself)."""
        height, width = self.original_shape
        vertical = (height - self.databar_rows) / self.pixels.shape[0]
        horizontal = width / self.pixels.shape[1]
        return {
            **found,
            "tile_px": round(float(found["tile_px"]) * horizontal, 2),
            "tops": [round(float(t) * vertical, 1) for t in found["tops"]],
            "lefts": [round(float(le) * horizontal, 1) for le in found["lefts"]],
        }


def prepare(
    image: np.ndarray, scale: SemScale | None, preprocessing: Preprocessing, source: str
) -> PreparedImage:
    """``image`` (float32 H x W in [0, 1]) brought to the model's scale, as the endpoint
    would; EndpointError when a physical-scale model gets no pixel size, or the image
    is smaller than one tile."""
    rows = 0
    if preprocessing.physical:
        if scale is None or scale.pixel_size_um is None:
            raise EndpointError(
                f"{source}: the model works at {preprocessing.pixel_size_um:g} um per pixel "
                "and this image's pixel size is unknown, so it cannot be brought to that "
                "scale: give its pixel size (--pixel-size-um, or scale=SemScale(...))"
            )
        rows = databar_rows(image, scale)
        scale = replace(scale, databar_px=rows)
    try:
        pixels = preprocessing.prepare(image, scale, source)
    except (ScaleError, TileError) as exc:
        raise EndpointError(str(exc)) from None
    return PreparedImage(
        np.clip(pixels, 0.0, 1.0), (image.shape[0], image.shape[1]), rows, preprocessing
    )


def npy_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` as float32 ``.npy`` bytes (what the endpoint reads without rounding)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(pixels, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def npy_size(height: int, width: int) -> int:
    """Bytes of an ``npy_bytes`` body of ``height`` x ``width`` pixels (at most)."""
    return NPY_HEADER_BYTES + 4 * height * width


def evaluation_mosaic(prepared: PreparedImage) -> np.ndarray:
    """The endpoint's evaluation tiles of ``prepared`` side by side (``tile_grid`` x
    ``tile_grid`` tiles, row by row): the endpoint's grid over this mosaic is exactly
    these tiles, so it answers as for the whole image."""
    size, grid = prepared.preprocessing.image_size, prepared.preprocessing.tile_grid
    height, width = prepared.pixels.shape
    mosaic = np.empty((grid * size, grid * size), dtype=np.float32)
    for index, (top, left) in enumerate(grid_positions(height, width, size, grid)):
        row, col = divmod(index, grid)
        tile = prepared.pixels[top : top + size, left : left + size]
        mosaic[row * size : (row + 1) * size, col * size : (col + 1) * size] = tile
    return mosaic


@dataclass(frozen=True)
class Piece:
    """One piece of a prepared image sent for its map: its corner and size (prepared
    pixels)."""

    top: int
    left: int
    height: int
    width: int


def map_pieces(height: int, width: int, size: int, limit_bytes: int) -> list[Piece]:
    """Overlapping pieces of a ``height`` x ``width`` prepared image, each under
    ``limit_bytes`` as ``.npy``, whose maps together hold every tile of the whole image's
    half-tile grid (each piece's tiles lie on that grid)."""
    stride = max(1, size // 2)
    per_side = min(
        MAX_PIECE_TILES_PER_SIDE,
        int((math.isqrt(max(0, (limit_bytes - NPY_HEADER_BYTES) // 4)) - size) // stride) + 1,
    )
    if per_side < 1:
        raise EndpointError(
            f"one {size}x{size} tile is over the request limit of {limit_bytes} bytes; "
            "raise the limit or use the asynchronous endpoint (serve deploy --async)"
        )
    tops = _chunks(tile_starts(height, size, height + 2), per_side)
    lefts = _chunks(tile_starts(width, size, width + 2), per_side)
    return [
        Piece(rows[0], cols[0], rows[-1] - rows[0] + size, cols[-1] - cols[0] + size)
        for rows in tops
        for cols in lefts
    ]


def _chunks(starts: Sequence[int], count: int) -> list[Sequence[int]]:
    return [starts[i : i + count] for i in range(0, len(starts), count)]


def join_maps(pieces: Sequence[Piece], maps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The whole image's map from its pieces' maps (each in its piece's pixels): every
    tile at its place in the whole image, each class's share of all tiles, the dominant
    class. EndpointError when a piece's tiles are not on the whole image's grid (an
    endpoint that maps differently)."""
    classes = list(maps[0]["classes"])
    tiles: dict[tuple[int, int], list[float]] = {}
    for piece, found in zip(pieces, maps, strict=True):
        probabilities = found["probabilities"]
        for r, top in enumerate(found["tops"]):
            for c, left in enumerate(found["lefts"]):
                tiles.setdefault(
                    (piece.top + round(top), piece.left + round(left)), probabilities[r][c]
                )
    tops = sorted({top for top, _ in tiles})
    lefts = sorted({left for _, left in tiles})
    if len(tiles) != len(tops) * len(lefts):
        raise EndpointError(
            "the pieces' maps do not make one grid of tiles; ask for the map of a smaller "
            "image, or use the asynchronous endpoint (serve deploy --async)"
        )
    grid = np.array([[tiles[(top, left)] for left in lefts] for top in tops], dtype=np.float64)
    winners = grid.argmax(axis=-1).ravel()
    fractions = np.bincount(winners, minlength=len(classes)) / winners.size
    return {
        "classes": classes,
        "rows": len(tops),
        "cols": len(lefts),
        "tile_px": maps[0]["tile_px"],
        "tops": [float(t) for t in tops],
        "lefts": [float(le) for le in lefts],
        "probabilities": np.round(grid, 4).tolist(),
        "fractions": {k: round(float(f), 4) for k, f in zip(classes, fractions, strict=True)},
        "dominant": classes[int(fractions.argmax())],
    }


def piece_pixels(prepared: PreparedImage, piece: Piece) -> np.ndarray:
    """The prepared pixels of ``piece``."""
    return prepared.pixels[
        piece.top : piece.top + piece.height, piece.left : piece.left + piece.width
    ]
