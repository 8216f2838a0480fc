"""Find the data bar that SEM software burns into the bottom of a micrograph.

Microscopes write magnification, HV, WD and a scale bar into a band at the bottom of the
image: a flat background with sparse text, unlike the noisy texture of a fracture
surface. Where the metadata does not give its height, a bar is detected as the run of
bottom rows in which one grey value covers most of the row. A fractograph whose own
bottom rows are flat (a saturated void, a black border) looks the same, so the run must
be at least a few rows and at most a quarter of the image; a flatter image is no bar.
"""

from __future__ import annotations

import numpy as np

from fractofl.core.images.scale import SemScale

MIN_FLAT_SHARE = 0.5  # one value covers at least half of a data-bar row
MIN_ROWS = 4  # a data bar is a band, not a line
MAX_SHARE_OF_HEIGHT = 0.25  # data bars take 5-15 % of the height


def flat_share(row: np.ndarray) -> float:
    """The share of a row's pixels that have its most common value."""
    _, counts = np.unique(row, return_counts=True)
    return float(counts.max()) / row.size


def databar_rows(pixels: np.ndarray, scale: SemScale) -> int:
    """The data bar's height: from the metadata when it gives one, else detected."""
    return scale.databar_px if scale.databar_px is not None else detect_databar(pixels)


def detect_databar(pixels: np.ndarray) -> int:
    """Rows of data bar at the bottom of a 2-D grayscale image (0 when there is none)."""
    height = pixels.shape[0]
    limit = int(height * MAX_SHARE_OF_HEIGHT)
    rows = 0
    while rows < height and flat_share(pixels[height - 1 - rows]) >= MIN_FLAT_SHARE:
        rows += 1
        if rows > limit:
            return 0  # flat further up than a data bar reaches: not a bar
    return rows if rows >= MIN_ROWS else 0
