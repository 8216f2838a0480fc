"""The physical scale of SEM images, read from what microscopes write: Thermo Fisher/FEI
and Zeiss TIFF tags (through tifffile), JEOL and Hitachi sidecar files, a folder's
scale.yaml; reported by the data check."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fractofl.core.images.data_check import check_dataset, format_report
from fractofl.core.images.sem_scale import (
    UNKNOWN,
    ScaleFileError,
    length_um,
    read_scale_file,
    read_sem_scale,
)

FEI_TAG, ZEISS_TAG = 34682, 34118  # FEI_HELIOS, CZ_SEM
FEI_TEXT = (
    "[User]\nDate=12/03/2026\n[Beam]\nHV=20000\n[Scan]\nPixelWidth=2.5e-08\n"
    "PixelHeight=2.5e-08\n[PrivateFei]\nDatabarHeight=59\n"
)
ZEISS_TEXT = "\r\n".join(
    ["", "AP_IMAGE_PIXEL_SIZE", "Image Pixel Size = 2.233 nm", "AP_MAG", "Mag = 1.00 K X", ""]
)
JEOL_TEXT = "$CM_FORMAT JEOL/SEM\n$CM_MAG 5000\n$$SM_MICRON_BAR 128\n$$SM_MICRON_MARKER 5um\n"
HITACHI_TEXT = "[SemImageFile]\nMagnification=20000\nPixelSize=9.921875\n"


def _sem_tiff(path: Path, tag: int | None = None, text: str = "", seed: int = 0) -> Path:
    """A 16-bit micrograph as a microscope writes it, with its metadata tag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 65535, (96, 128), dtype=np.uint16)
    extratags = [(tag, "s", 0, text, True)] if tag else []
    tifffile.imwrite(path, pixels, extratags=extratags)
    return path


def test_fei_and_zeiss_tags_give_pixel_size_data_bar_and_magnification(tmp_path: Path) -> None:
    fei = read_sem_scale(_sem_tiff(tmp_path / "fei.tif", FEI_TAG, FEI_TEXT))
    zeiss = read_sem_scale(_sem_tiff(tmp_path / "zeiss.tif", ZEISS_TAG, ZEISS_TEXT))
    assert fei.pixel_size_um == pytest.approx(0.025) and fei.databar_px == 59
    assert fei.source == "FEI tags"
    assert zeiss.pixel_size_um == pytest.approx(0.002233) and zeiss.magnification == 1000
    assert zeiss.source == "Zeiss tags"


def test_jeol_and_hitachi_sidecars_give_the_scale(tmp_path: Path) -> None:
    jeol = _sem_tiff(tmp_path / "jeol.tif", seed=1)
    jeol.with_suffix(".txt").write_text(JEOL_TEXT)
    hitachi = _sem_tiff(tmp_path / "hitachi.tif", seed=2)
    hitachi.with_suffix(".txt").write_text(HITACHI_TEXT)
    assert read_sem_scale(jeol).pixel_size_um == pytest.approx(5 / 128)
    assert read_sem_scale(jeol).magnification == 5000
    assert read_sem_scale(hitachi).pixel_size_um == pytest.approx(0.009921875)
    assert read_sem_scale(hitachi).source == "Hitachi sidecar"


def test_a_folders_scale_file_covers_images_without_metadata_only(tmp_path: Path) -> None:
    # Prepare: a member folder with a scale.yaml at its root and two images below it
    (tmp_path / "scale.yaml").write_text("pixel_size_um: 0.1\ndatabar_px: 40\n")
    bare = _sem_tiff(tmp_path / "fatigue" / "bare.tif", seed=3)
    tagged = _sem_tiff(tmp_path / "fatigue" / "tagged.tif", FEI_TAG, FEI_TEXT, seed=4)
    # Execute / Assert: the file's own tags win; the scale.yaml is found from a sub-folder,
    # but not without the data folder as the limit
    assert read_sem_scale(bare, tmp_path).pixel_size_um == 0.1
    assert read_sem_scale(bare, tmp_path).databar_px == 40
    assert read_sem_scale(tagged, tmp_path).source == "FEI tags"
    assert read_sem_scale(bare) == UNKNOWN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pixel_size: 0.1\n", "unknown key(s) pixel_size; valid: pixel_size_um"),
        ("magnification: 500\n", "needs pixel_size_um"),
        ("pixel_size_um: -0.1\n", "pixel_size_um=-0.1 must be a number > 0"),
        ("pixel_size_um: 0.1\ndatabar_px: 2.5\n", "databar_px=2.5 must be a whole number"),
        ("- 0.1\n", "must be a mapping"),
    ],
)
def test_a_bad_scale_file_is_named_with_its_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "scale.yaml").write_text(text)
    with pytest.raises(ScaleFileError, match=re.escape(message)):
        read_scale_file(tmp_path / "scale.yaml")


def test_lengths_in_any_unit() -> None:
    assert length_um("5um") == 5 and length_um("500 nm") == pytest.approx(0.5)
    assert length_um("1 mm") == 1000 and length_um("five um") is None


def test_the_data_check_reports_scales_and_images_without_one(tmp_path: Path) -> None:
    # Prepare: one image each from FEI, Zeiss, JEOL and none
    _sem_tiff(tmp_path / "fatigue" / "a.tif", FEI_TAG, FEI_TEXT, seed=5)
    _sem_tiff(tmp_path / "fatigue" / "b.tif", ZEISS_TAG, ZEISS_TEXT, seed=6)
    _sem_tiff(tmp_path / "ductile" / "c.tif", seed=7).with_suffix(".txt").write_text(JEOL_TEXT)
    _sem_tiff(tmp_path / "ductile" / "d.tif", seed=8)
    # Execute
    report = check_dataset(tmp_path, ["fatigue", "ductile"])
    text = format_report(report)
    # Assert
    assert report.ok and report.total_images == 4
    assert dict(report.scale_sources) == {"FEI tags": 1, "Zeiss tags": 1, "JEOL sidecar": 1}
    assert "Physical scale: pixel size 0.002233..0.03906 um" in text
    assert "magnification 1000x..5000x; data bar known in 1" in text
    assert "Images without a known scale" in text and "ductile/d.tif" in text
    assert any("1 image(s) have no known pixel size while others do" in w for w in report.warnings)
    assert report.to_dict()["scale"]["without_scale"] == ["ductile/d.tif"]
    assert report.skipped == []  # the sidecar is read, not skipped


def test_a_data_bar_taller_than_the_image_is_named(tmp_path: Path) -> None:
    _sem_tiff(tmp_path / "fatigue" / "a.tif", FEI_TAG, FEI_TEXT.replace("=59", "=500"), seed=9)
    report = check_dataset(tmp_path, ["fatigue"])
    assert any(
        "fatigue/a.tif: its data bar of 500 px (FEI tags) covers the whole 96-px image" in w
        for w in report.warnings
    )
