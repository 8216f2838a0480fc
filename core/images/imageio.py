"""Safe reading of fracture-surface images: header probing, grayscale decoding, hashing.

Files (training), bytes (a served request) and pixel arrays all go through the same
grayscale rules, so a served model sees an image as it was trained on it.

Every failure to open or decode a file is raised as :class:`UnreadableImageError`, so a
caller scanning a member's folder can report bad files one by one instead of crashing.
PIL's process-wide settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``)
are never changed here; the pixel limit is enforced per call through ``max_pixels``.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
"""Lower-case file suffixes treated as images."""

DEFAULT_MAX_PIXELS: int = 50_000_000
"""Largest width x height accepted by default (about 7000 x 7000).

A float32 copy of such an image takes 200 MB; larger files are far beyond what an SEM
micrograph needs and are more likely a corrupt or hostile header than real data.
"""


@dataclass(frozen=True)
class ImageBounds:
    """The largest image accepted, checked from the header before any pixel is decoded.

    The pixel count alone does not bound the work: a legal 49,000,000 x 1 PNG of 47 KB
    has fewer pixels than a 7000 x 7000 micrograph, and resizing it took 13 GiB. A side
    and an aspect-ratio bound keep every resampling buffer (about the long side times
    the output side) small.

    Attributes
    ----------
    max_pixels
        Largest width x height.
    max_side
        Longest width or height (``None``: no bound beyond ``max_pixels``).
    max_aspect_ratio
        Largest long side / short side (``None``: no bound).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int | None = None
    max_aspect_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or (self.max_side is not None and self.max_side < 1):
            raise ValueError(
                f"max_image_pixels={self.max_pixels} and max_image_side={self.max_side} must "
                "be >= 1"
            )
        if self.max_aspect_ratio is not None and not self.max_aspect_ratio >= 1:
            raise ValueError(f"max_aspect_ratio={self.max_aspect_ratio} must be >= 1")

    def refusal(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` image is refused, or ``None`` when it is not."""
        if width * height > self.max_pixels:
            return (
                f"image is {width}x{height} = {width * height} pixels, above the limit of "
                f"{self.max_pixels}; downscale or crop it, or raise max_pixels"
            )
        if self.max_side is not None and max(width, height) > self.max_side:
            return (
                f"image is {width}x{height}, a side above the limit of {self.max_side} "
                "pixels; downscale or crop it"
            )
        ratio = max(width, height) / min(width, height)
        if self.max_aspect_ratio is not None and ratio > self.max_aspect_ratio:
            return (
                f"image is {width}x{height}, {ratio:.0f} times longer than wide, above the "
                f"limit of {self.max_aspect_ratio:g}; send the micrograph, not a strip of it"
            )
        return None


# PIL plugin identifiers allowed to open a file. Restricting them keeps PIL from handing a
# misnamed file to exotic plugins (EPS, for instance, would start Ghostscript). "MPO" must not
# be listed: it has no opener of its own (the JPEG opener returns MPO files) and PIL raises
# KeyError for it.
_PIL_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "BMP", "DIB")

_HASH_CHUNK = 1 << 20

# Bits per sample for each PIL mode; modes not listed are treated as 8-bit.
_MODE_BIT_DEPTH: dict[str, int] = {
    "1": 1,
    "I;16": 16,
    "I;16B": 16,
    "I;16L": 16,
    "I;16N": 16,
    "I;16S": 16,
    "I": 32,
    "F": 32,
}

# ITU-R BT.601 luma weights, the same ones PIL uses for convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class UnreadableImageError(ValueError):
    """A file cannot be used as an image.

    Parameters
    ----------
    path
        The file at fault.
    reason
        Why it cannot be used, phrased for a person fixing the data.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    """What an image header says, without any pixel decoded.

    Attributes
    ----------
    path
        The file.
    width, height
        Size in pixels.
    mode
        PIL mode, e.g. ``"L"``, ``"I;16"``, ``"RGB"``, ``"F"``.
    bit_depth
        Bits per sample of the data PIL decodes, implied by the mode (1, 8, 16 or 32).
        PIL reduces 16-bit colour (and 16-bit gray + alpha) PNG and TIFF to 8 bits, so
        those report 8.
    channels
        Number of bands (1 for grayscale, 3 for RGB, 4 for RGBA).
    format
        PIL format name, e.g. ``"PNG"`` or ``"TIFF"``.
    """

    path: Path
    width: int
    height: int
    mode: str
    bit_depth: int
    channels: int
    format: str

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def probe_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read an image header and check it, without decoding pixels.

    Parameters
    ----------
    path
        Image file (PNG, JPEG, TIFF or BMP, whatever its suffix).
    max_pixels
        Largest accepted width x height; see :data:`DEFAULT_MAX_PIXELS`.

    Returns
    -------
    ImageInfo
        Size, mode, bit depth and channel count.

    Raises
    ------
    UnreadableImageError
        If the file is missing or empty, is not a supported image, or declares more
        than ``max_pixels`` pixels. A truncated pixel stream is *not* detected here;
        use :func:`read_grayscale` for that.
    """
    path = Path(path)
    with _open(path, max_pixels) as im:
        return _info(path, im)


def read_grayscale(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image to a float32 grayscale array in [0, 1].

    8-bit data is divided by 255 and 16-bit data by 65535, so 16-bit SEM images keep
    their full precision. Colour images are reduced to BT.601 luminance and any alpha
    channel is ignored. 32-bit integer (mode ``I``) data within 0..65535 is treated as
    16-bit; integer or float data outside the expected range is rescaled by its own
    minimum and maximum. Only the first frame of a multi-page TIFF is read. 16-bit
    colour files lose their low 8 bits, because PIL decodes them as 8-bit RGB.

    Parameters
    ----------
    path
        Image file.
    max_pixels
        Largest accepted width x height, checked from the header before decoding.

    Returns
    -------
    numpy.ndarray
        Array of shape (height, width), dtype float32, values in [0, 1].

    Raises
    ------
    UnreadableImageError
        If the file cannot be opened, is too large, is truncated or fails to decode,
        or holds non-finite float values.
    """
    path = Path(path)
    with _open(path, max_pixels) as im:
        return _decode(im, path)


def decode_grayscale(
    data: bytes,
    source: str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bounds: ImageBounds | None = None,
) -> np.ndarray:
    """Decode image bytes (e.g. a request body) exactly as :func:`read_grayscale` reads a file.

    ``source`` names the bytes in errors; ``bounds``, when given, replaces ``max_pixels``
    (a served request's side and aspect-ratio bounds too); the other rules, return
    value and errors are those of :func:`read_grayscale`.
    """
    if not data:
        raise UnreadableImageError(source, "no image data (0 bytes)")
    with _open_stream(source, io.BytesIO(data), bounds or ImageBounds(max_pixels)) as im:
        return _decode(im, source)


def grayscale_from_array(
    values: np.ndarray,
    source: str = "<array>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bounds: ImageBounds | None = None,
) -> np.ndarray:
    """Turn a pixel array (H x W, or H x W x C) into float32 grayscale in [0, 1].

    The rules follow :func:`read_grayscale`: ``uint8`` is divided by 255 and ``uint16``
    by 65535; other integers within 0..65535 are divided by 65535 and any others are
    rescaled by their minimum and maximum, as are floats outside [0, 1]; booleans become
    0 and 1. With C = 1 or 2 the first channel is the gray level (2: gray + alpha); with
    C = 3 or 4 it is the BT.601 luminance of the first three (alpha ignored).

    Raises
    ------
    UnreadableImageError
        If the array is not numeric, not 2-D or H x W x C with C in 1..4, empty, larger
        than ``max_pixels``, or holds NaN or infinite values.
    """
    if values.dtype.kind not in "biuf":
        raise UnreadableImageError(
            source, f"array of dtype {values.dtype} is not an image; send integers or floats"
        )
    if not (values.ndim == 2 or (values.ndim == 3 and 1 <= values.shape[2] <= 4)):
        raise UnreadableImageError(
            source,
            f"array of shape {values.shape} is not an image; send H x W (grayscale) or "
            "H x W x C with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)",
        )
    height, width = values.shape[:2]
    if height * width == 0:
        raise UnreadableImageError(source, f"array of shape {values.shape} has no pixels")
    refusal = (bounds or ImageBounds(max_pixels)).refusal(width, height)
    if refusal is not None:
        raise UnreadableImageError(source, refusal.replace("image is", "array is", 1))
    unit = _unit_scale(values)
    if values.ndim == 3:  # 1 or 2 channels: gray (+ alpha); 3 or 4: RGB (+ alpha)
        channels = values.shape[2]
        unit = unit[..., 0] if channels <= 2 else np.clip(unit[..., :3] @ _LUMA, 0.0, 1.0)
    gray = np.ascontiguousarray(unit, dtype=np.float32)
    if not np.all(np.isfinite(gray)):
        raise UnreadableImageError(source, "array contains NaN or infinite values")
    return gray


def _unit_scale(values: np.ndarray) -> np.ndarray:
    """Scale an integer, boolean or float array onto [0, 1] by the rules of
    :func:`grayscale_from_array`."""
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    if values.dtype.kind in "iu":
        if values.dtype == np.uint16 or (values.min() >= 0 and values.max() <= 65535):
            return values.astype(np.float32) / 65535.0
        return _rescale(values.astype(np.float64))
    floats = values.astype(np.float32)
    finite = floats[np.isfinite(floats)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        return _rescale(floats)
    return floats


def _decode(im: Image.Image, source: Path | str) -> np.ndarray:
    """Load an opened image's pixels and turn them into unit grayscale."""
    try:
        im.load()
        gray = _to_unit_gray(im)
    except UnreadableImageError:
        raise
    except Exception as exc:
        # PIL plugins raise OSError, SyntaxError, ValueError, struct.error, zlib.error
        # and more for corrupt data; all of them mean the same thing to the caller.
        raise UnreadableImageError(source, f"cannot decode pixels ({_describe(exc)})") from exc
    if not np.all(np.isfinite(gray)):
        raise UnreadableImageError(source, "float image contains NaN or infinite values")
    return gray


def file_digest(path: Path | str) -> str:
    """Return the SHA-256 of a file's content as a hex string, reading it in chunks.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` lazily after checking it exists, is non-empty and is small enough."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot access file ({_describe(exc)})") from exc
    if not path.is_file():
        raise UnreadableImageError(path, "not a regular file")
    if size == 0:
        raise UnreadableImageError(path, "file is empty (0 bytes); re-export or remove it")
    return _open_stream(path, path, ImageBounds(max_pixels))


def _open_stream(source: Path | str, stream: Path | BinaryIO, bounds: ImageBounds) -> Image.Image:
    """Open an image from a path or binary stream lazily; ``source`` names it in errors."""
    try:
        with warnings.catch_warnings():
            # We enforce our own limit below; PIL's warning (above Image.MAX_IMAGE_PIXELS)
            # and EXIF complaints would only be noise.
            warnings.simplefilter("ignore")
            im = Image.open(stream, formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        # PIL refuses on its own above 2 x Image.MAX_IMAGE_PIXELS, before we see the size,
        # whatever max_pixels says; we leave that global alone.
        raise UnreadableImageError(source, _bomb_reason(bounds.max_pixels)) from exc
    except Image.UnidentifiedImageError as exc:
        raise UnreadableImageError(
            source, "not a readable PNG, JPEG, TIFF or BMP image (wrong content or corrupt header)"
        ) from exc
    except Exception as exc:
        raise UnreadableImageError(source, f"cannot open image ({_describe(exc)})") from exc
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise UnreadableImageError(source, f"image header declares an empty size {width}x{height}")
    refusal = bounds.refusal(width, height)
    if refusal is not None:
        im.close()
        raise UnreadableImageError(source, refusal)
    return im


def _bomb_reason(max_pixels: int) -> str:
    pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if max_pixels < pil_limit:
        limit = f"above the limit of {max_pixels} (max_pixels)"
    else:
        limit = f"above PIL's own hard limit of {pil_limit}, which max_pixels cannot raise"
    return (
        f"image header declares too many pixels, over {pil_limit} and {limit}; refused "
        "without decoding; downscale or crop it"
    )


def _info(path: Path, im: Image.Image) -> ImageInfo:
    width, height = im.size
    return ImageInfo(
        path=path,
        width=width,
        height=height,
        mode=im.mode,
        bit_depth=_MODE_BIT_DEPTH.get(im.mode, 8),
        channels=len(im.getbands()),
        format=im.format or "unknown",
    )


def _to_unit_gray(im: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image to float32 grayscale in [0, 1]."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / 255.0
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode.startswith("I;16"):
        raw = np.asarray(im)
        if raw.dtype.kind == "i":  # I;16S: signed 16-bit
            return _rescale(raw.astype(np.float32))
        return raw.astype(np.float32) / 65535.0
    if mode == "I":
        raw = np.asarray(im)
        if raw.size and raw.min() >= 0 and raw.max() <= 65535:
            return raw.astype(np.float32) / 65535.0
        return _rescale(raw.astype(np.float64)).astype(np.float32)
    if mode == "F":
        raw = np.asarray(im, dtype=np.float32)
        finite = raw[np.isfinite(raw)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            return _rescale(raw)
        return raw.copy()
    if mode == "LA":
        return np.asarray(im.getchannel(0), dtype=np.float32) / 255.0
    rgb = im if mode in ("RGB", "RGBA", "RGBX") else im.convert("RGB")
    channels = np.asarray(rgb, dtype=np.float32)[..., :3]
    gray: np.ndarray = (channels @ _LUMA) / 255.0
    return np.clip(gray, 0.0, 1.0).astype(np.float32)


def _rescale(values: np.ndarray) -> np.ndarray:
    """Map values linearly onto [0, 1] by their finite min and max (constant -> 0)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values.astype(np.float32)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.where(np.isfinite(values), 0.0, values).astype(np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def walk_image_tree(folder: Path, errors: list[OSError] | None = None) -> Iterator[Path]:
    """Yield non-hidden files (any suffix) under ``folder`` recursively, in sorted order.

    Folders that cannot be listed are appended to ``errors`` when given, else skipped.
    """
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_collector(errors)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.startswith("."):
                yield Path(dirpath) / filename


def _collector(errors: list[OSError] | None) -> Callable[[OSError], None] | None:
    return None if errors is None else errors.append
