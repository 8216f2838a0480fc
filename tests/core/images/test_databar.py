"""The data bar at the bottom of a micrograph: found in the pixels when the metadata does
not give it, never in a noisy fracture texture, never as the whole image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from fractofl.core.images.data_check import check_dataset, format_report
from fractofl.core.images.databar import detect_databar


def micrograph(height: int = 480, width: int = 640, bar: int = 0, seed: int = 0) -> np.ndarray:
    """A noisy 16-bit surface with, if ``bar``, a black band of that height at the bottom
    carrying sparse white text and a scale-bar line, as SEM software writes it."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(30000, 6000, (height, width)).clip(0, 65535).astype(np.uint16)
    if bar:
        band = pixels[height - bar :]
        band[:] = 0
        band[bar // 3 : bar // 3 + 8, 20:200:3] = 65535  # text: "HV 20.0 kV  WD 10.1 mm"
        band[bar // 2, 400:560] = 65535  # the scale bar
    return pixels


def test_a_bar_is_found_with_its_height_and_a_surface_has_none() -> None:
    assert detect_databar(micrograph(bar=44) / 65535.0) == 44
    assert detect_databar(micrograph(seed=1) / 65535.0) == 0


def test_a_flat_image_or_a_thin_line_is_no_bar() -> None:
    flat = np.full((200, 300), 0.5, dtype=np.float32)
    thin = micrograph(seed=2, height=200, width=300) / 65535.0
    thin[-2:] = 0.0  # a two-row black border
    assert detect_databar(flat) == 0  # flat far above where a data bar reaches
    assert detect_databar(thin) == 0


def test_the_data_check_counts_bars_found_in_the_pixels(tmp_path: Path) -> None:
    # Prepare: two micrographs with a burnt-in bar and no metadata, one without a bar
    (tmp_path / "fatigue").mkdir()
    tifffile.imwrite(tmp_path / "fatigue" / "a.tif", micrograph(bar=40, seed=3))
    tifffile.imwrite(tmp_path / "fatigue" / "b.tif", micrograph(bar=52, seed=4))
    tifffile.imwrite(tmp_path / "fatigue" / "c.tif", micrograph(seed=5))
    # Execute
    report = check_dataset(tmp_path, ["fatigue"])
    # Assert
    assert report.databars_detected == 2
    assert "a data bar detected in the pixels of 2" in format_report(report)
