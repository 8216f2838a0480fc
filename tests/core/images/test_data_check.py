"""Tests for fractofl.core.images.data_check: the pre-training check of a member's data folder."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractofl.core.images.data_check import DataReport, check_dataset, format_report

CLASSES = ("fatigue", "ductile", "cleavage", "intergranular")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_png_header(path: Path, width: int, height: int) -> None:
    """Write a PNG whose IHDR declares ``width`` x ``height`` but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def write_gray(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> None:
    """Write a distinct random 8-bit grayscale image (height, width) = ``size``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def messy_root(tmp_path: Path) -> Path:
    """A data folder with one example of every problem the check must report."""
    root = tmp_path / "data"
    fatigue, ductile = root / "fatigue", root / "ductile"
    write_gray(fatigue / "f1.png", 1)
    write_gray(fatigue / "f2.png", 2)
    write_gray(fatigue / "nested" / "f3.png", 3)
    shutil.copy(fatigue / "f1.png", fatigue / "f1_copy.png")
    write_gray(ductile / "d1.png", 11)
    write_gray(ductile / "d2.png", 12, size=(16, 20))  # small
    shutil.copy(fatigue / "f2.png", ductile / "f2_mislabelled.png")

    whole = np.random.default_rng(4).integers(0, 256, (128, 128), dtype=np.uint8)
    Image.fromarray(whole).save(fatigue / "cut.jpg", quality=95)
    data = (fatigue / "cut.jpg").read_bytes()
    (fatigue / "cut.jpg").write_bytes(data[: len(data) // 2])

    sem = np.linspace(0, 65535, 48 * 64).astype(np.uint16).reshape(48, 64)
    Image.fromarray(sem).save(fatigue / "sem16.tif")
    rgba = np.random.default_rng(5).integers(0, 256, (48, 64, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(ductile / "rgba.png")
    Image.fromarray(np.random.default_rng(6).integers(0, 2, (48, 64)).astype(bool)).save(
        ductile / "mask.bmp"
    )
    (fatigue / "empty.png").touch()
    write_png_header(fatigue / "huge.png", 20000, 20000)
    (fatigue / "notes.png").write_text("this is not an image\n")
    (fatigue / "readme.txt").write_text("scanned 2024\n")
    (root / "cleavage").mkdir()
    write_gray(root / "misc" / "m1.png", 21)
    write_gray(root / "misc" / "m2.jpg", 22)
    write_gray(root / "loose.png", 31)
    write_gray(root / ".cache" / "ignored.png", 41)
    (fatigue / ".DS_Store").write_bytes(b"\x00\x01")
    return root


def test_messy_folder_is_usable_with_every_problem_reported(messy_root: Path) -> None:
    # Execute
    report = check_dataset(messy_root, CLASSES, min_size=32)

    # Assert: counts (usable images only) list every class.
    assert report.ok
    assert report.class_counts == {"fatigue": 5, "ductile": 5, "cleavage": 0, "intergranular": 0}
    assert report.missing_classes == ["intergranular"]
    assert report.unknown_folders == {"misc": 2}
    assert report.loose_files == [messy_root / "loose.png"]
    assert report.skipped == [messy_root / "fatigue" / "readme.txt"]

    unreadable = {u.path.name: u.reason for u in report.unreadable}
    assert set(unreadable) == {"cut.jpg", "empty.png", "huge.png", "notes.png"}
    assert "truncated" in unreadable["cut.jpg"]
    assert "empty" in unreadable["empty.png"]
    assert "too many pixels" in unreadable["huge.png"]
    assert "not a readable" in unreadable["notes.png"]

    f1, f1_copy = messy_root / "fatigue" / "f1.png", messy_root / "fatigue" / "f1_copy.png"
    f2, f2_other = messy_root / "fatigue" / "f2.png", messy_root / "ductile" / "f2_mislabelled.png"
    assert sorted(report.duplicate_groups) == sorted(
        [sorted([f1, f1_copy]), sorted([f2, f2_other])]
    )
    assert report.label_conflicts == [sorted([f2, f2_other])]

    assert [(s.path.name, s.width, s.height) for s in report.small_images] == [("d2.png", 20, 16)]
    assert report.size_range() == (20, 64, 16, 48)
    assert report.size_counts[(64, 48)] == 9
    assert report.modes == {"L": 7, "I;16": 1, "RGBA": 1, "1": 1}
    assert report.bit_depths == {8: 8, 16: 1, 1: 1}
    assert report.fatal_problems == []


def test_messy_folder_warnings_name_each_kind_of_problem(messy_root: Path) -> None:
    # Execute
    report = check_dataset(messy_root, CLASSES)

    # Assert
    text = "\n".join(report.warnings)
    assert "'misc'" in text
    assert "'cleavage' has no usable image" in text
    assert "'intergranular' has no folder" in text
    assert "4 unreadable" in text
    assert "labelling conflict" in text
    assert "1 group(s) of duplicate" in text
    assert "smaller than 32" in text
    assert "unsupported suffix" in text
    assert "directly in the root" in text


def test_format_report_mentions_bad_files_and_classes(messy_root: Path) -> None:
    # Prepare
    report = check_dataset(messy_root, CLASSES)

    # Execute
    text = format_report(report)

    # Assert
    for name in CLASSES:
        assert name in text
    for bad in ("cut.jpg", "empty.png", "huge.png", "notes.png", "readme.txt", "loose.png"):
        assert bad in text
    assert "f2_mislabelled.png" in text
    assert "misc/" in text
    assert "d2.png: 20x16" in text
    assert "WARNING:" in text
    assert "FATAL:" not in text


def test_format_report_caps_long_listings(messy_root: Path) -> None:
    # Prepare
    report = check_dataset(messy_root, CLASSES)

    # Execute
    text = format_report(report, max_items=1)

    # Assert
    assert "... and 3 more" in text


def test_to_dict_is_json_serialisable_with_relative_paths(messy_root: Path) -> None:
    # Prepare
    report = check_dataset(messy_root, CLASSES)

    # Execute
    data = json.loads(json.dumps(report.to_dict()))

    # Assert
    assert data["ok"] is True
    assert data["total_images"] == 10
    assert "fatigue/cut.jpg" in [u["path"] for u in data["unreadable"]]
    assert data["label_conflicts"] == [["ductile/f2_mislabelled.png", "fatigue/f2.png"]]
    assert data["sizes"]["most_common"][0] == {"width": 64, "height": 48, "count": 9}
    assert data["bit_depths"] == {"1": 1, "8": 8, "16": 1}


def test_progress_callback_sees_every_image(messy_root: Path) -> None:
    # Prepare
    calls: list[tuple[int, int]] = []

    # Execute
    check_dataset(messy_root, CLASSES, progress=lambda done, total: calls.append((done, total)))

    # Assert: 14 files with an image suffix in class folders, plus the initial (0, total).
    assert calls[0] == (0, 14)
    assert calls[-1] == (14, 14)
    assert [done for done, _ in calls] == list(range(15))


def test_header_only_check_misses_truncation_but_not_bad_headers(messy_root: Path) -> None:
    # Execute
    report = check_dataset(messy_root, CLASSES, decode=False)

    # Assert
    names = {u.path.name for u in report.unreadable}
    assert names == {"empty.png", "huge.png", "notes.png"}
    assert report.class_counts["fatigue"] == 6


def test_nonexistent_root_is_fatal(tmp_path: Path) -> None:
    # Execute
    report = check_dataset(tmp_path / "absent", CLASSES)

    # Assert
    assert not report.ok
    assert "does not exist" in report.fatal_problems[0]
    assert report.class_counts == dict.fromkeys(CLASSES, 0)
    assert "FATAL: data root" in format_report(report)


def test_root_that_is_a_file_is_fatal(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK")

    # Execute
    report = check_dataset(path, CLASSES)

    # Assert
    assert not report.ok
    assert "not a directory" in report.fatal_problems[0]


def test_empty_root_is_fatal(tmp_path: Path) -> None:
    # Execute
    report = check_dataset(tmp_path, CLASSES)

    # Assert
    assert not report.ok
    assert len(report.fatal_problems) == 1
    assert "no class folder" in report.fatal_problems[0]
    assert "fatigue" in report.fatal_problems[0]


def test_root_with_only_unknown_folders_is_fatal_and_hints_at_case(tmp_path: Path) -> None:
    # Prepare
    write_gray(tmp_path / "Fatigue" / "a.png", 1)
    write_gray(tmp_path / "other" / "b.png", 2)

    # Execute
    report = check_dataset(tmp_path, CLASSES)

    # Assert
    assert not report.ok
    assert "no class folder" in report.fatal_problems[0]
    assert report.unknown_folders == {"Fatigue": 1, "other": 1}
    assert any("rename it to 'fatigue'" in w for w in report.warnings)


def test_class_folders_without_usable_images_are_fatal(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "fatigue").mkdir()
    (tmp_path / "ductile").mkdir()
    (tmp_path / "ductile" / "broken.png").write_text("nope")

    # Execute
    report = check_dataset(tmp_path, CLASSES)

    # Assert
    assert not report.ok
    assert "no usable image" in report.fatal_problems[0]
    assert [u.path.name for u in report.unreadable] == ["broken.png"]
    text = format_report(report)
    assert "broken.png" in text
    assert "FATAL: no usable image" in text


def test_member_holding_one_class_only_is_ok(tmp_path: Path) -> None:
    # Prepare
    write_gray(tmp_path / "cleavage" / "c.png", 1)

    # Execute
    report = check_dataset(tmp_path, CLASSES)

    # Assert
    assert report.ok
    assert report.class_counts["cleavage"] == 1
    assert sum(1 for w in report.warnings if "has no folder" in w) == 3


def test_report_defaults_are_independent() -> None:
    # Prepare / Execute
    first = DataReport(root=Path("a"), classes=CLASSES)
    second = DataReport(root=Path("b"), classes=CLASSES)
    first.warnings.append("x")

    # Assert
    assert second.warnings == []
    assert first.size_range() is None
