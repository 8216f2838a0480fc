"""A request body and its content type -> the grayscale image the model was trained on.

Images go through :func:`fractofl.core.images.imageio.decode_grayscale`, the very rules that
read training files (8- and 16-bit, RGB(A) reduced to BT.601 luminance); ``.npy``
arrays through :func:`~fractofl.core.images.imageio.grayscale_from_array`, loaded without
pickle so an object array is refused rather than run.
"""

from __future__ import annotations

import io

import numpy as np

from fractofl.core.images.imageio import (
    ImageBounds,
    UnreadableImageError,
    decode_grayscale,
    grayscale_from_array,
)
from fractofl.serving.request_errors import UndecodableInputError, UnsupportedContentTypeError

IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "image/tiff", "application/x-image")
NPY_CONTENT_TYPE = "application/x-npy"
CONTENT_TYPES = (*IMAGE_CONTENT_TYPES, NPY_CONTENT_TYPE)
"""Every content type a request may have."""

REQUEST_SOURCE = "request body"


def media_type(content_type: str | None) -> str:
    """``"Image/PNG; q=1"`` -> ``"image/png"``; ``None`` -> ``""``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_type_parameters(content_type: str | None) -> dict[str, str]:
    """``'image/png; heatmap="true"; q=1'`` -> ``{"heatmap": "true", "q": "1"}`` (RFC 9110
    parameters: names lower-cased, quotes removed, ill-formed ones skipped)."""
    parameters: dict[str, str] = {}
    for part in (content_type or "").split(";")[1:]:
        name, equals, value = part.partition("=")
        if equals and name.strip():
            parameters[name.strip().lower()] = value.strip().strip('"')
    return parameters


def decode_request(
    body: bytes, content_type: str | None, bounds: ImageBounds | None = None
) -> np.ndarray:
    """Decode a request body to float32 grayscale (H x W) in [0, 1]; an image over
    ``bounds`` (default :class:`~fractofl.core.images.imageio.ImageBounds`) is refused
    from its header, before any pixel is decoded.

    Raises
    ------
    UnsupportedContentTypeError
        If ``content_type`` is not one of :data:`CONTENT_TYPES` (415).
    UndecodableInputError
        If the body is empty or not a valid image or array of that type (400).
    """
    kind = media_type(content_type)
    if kind not in CONTENT_TYPES:
        raise UnsupportedContentTypeError(
            f"content type {content_type or '(none)'!r} is not supported; send one of "
            f"{', '.join(CONTENT_TYPES)}"
        )
    if not body:
        raise UndecodableInputError(f"empty {REQUEST_SOURCE}; send the image's bytes")
    try:
        if kind == NPY_CONTENT_TYPE:
            return grayscale_from_array(_load_npy(body), REQUEST_SOURCE, bounds=bounds)
        return decode_grayscale(bytes(body), REQUEST_SOURCE, bounds=bounds)
    except UnreadableImageError as exc:
        raise UndecodableInputError(f"{kind} {exc}") from exc


def _load_npy(body: bytes) -> np.ndarray:
    try:
        values = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for bad bytes
        raise UnreadableImageError(
            REQUEST_SOURCE,
            f"is not a .npy array ({type(exc).__name__}: {exc}); send numpy.save output of a "
            "numeric array (object arrays are refused)",
        ) from exc
    if not isinstance(values, np.ndarray):
        raise UnreadableImageError(REQUEST_SOURCE, "holds an .npz archive, not one .npy array")
    return values
