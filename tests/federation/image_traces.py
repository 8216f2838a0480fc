"""Find traces of a member's images in bytes it sent: file content or decoded pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WINDOW = 32
"""Bytes compared at a time: long enough that a match is never chance."""
MIN_DISTINCT_BYTES = 12
"""Windows with fewer distinct byte values (flat regions, headers) are not evidence."""


def _windows(data: bytes) -> list[bytes]:
    return [
        data[start : start + WINDOW]
        for start in range(0, len(data) - WINDOW + 1, WINDOW)
        if len(set(data[start : start + WINDOW])) >= MIN_DISTINCT_BYTES
    ]


def image_representations(path: Path) -> dict[str, bytes]:
    """The forms an image could leave in: the file, its 8/16-bit pixels, and the float32
    pixels in [0, 1] that the member's training code computes from it."""
    with Image.open(path) as image:
        pixels = np.asarray(image)
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return {
        "file": path.read_bytes(),
        "pixels": np.ascontiguousarray(pixels).tobytes(),
        "float32 pixels": (pixels.astype(np.float32) / scale).tobytes(),
    }


def find_image_traces(sent: bytes, images: list[Path]) -> list[str]:
    """``"<file>: <form>"`` for every image any of whose windows appears in ``sent``
    (at any byte offset)."""
    seen = {sent[start : start + WINDOW] for start in range(len(sent) - WINDOW + 1)}
    found = []
    for path in images:
        for form, data in image_representations(path).items():
            if any(window in seen for window in _windows(data)):
                found.append(f"{path.name}: {form}")
    return found
