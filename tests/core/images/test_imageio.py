"""Tests for fractofl.core.images.imageio: header probing, grayscale decoding and hashing."""

from __future__ import annotations

import hashlib
import struct
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fractofl.core.images.imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageInfo,
    UnreadableImageError,
    decode_grayscale,
    file_digest,
    grayscale_from_array,
    probe_image,
    read_grayscale,
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_png_header(path: Path, width: int, height: int) -> Path:
    """Write a PNG whose IHDR declares ``width`` x ``height`` but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )
    return path


def gradient_u8(height: int = 24, width: int = 40) -> np.ndarray:
    return (np.arange(height * width) % 256).astype(np.uint8).reshape(height, width)


@pytest.fixture(autouse=True)
def pil_globals_untouched() -> Iterator[None]:
    """Fail any test after which PIL's process-wide safety settings changed."""
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    yield
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_image_suffixes_are_lower_case_and_complete() -> None:
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} == IMAGE_SUFFIXES
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)


def test_probe_reports_header_of_8bit_png(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "a.png"
    Image.fromarray(gradient_u8()).save(path)

    # Execute
    info = probe_image(path)

    # Assert
    assert info == ImageInfo(
        path=path, width=40, height=24, mode="L", bit_depth=8, channels=1, format="PNG"
    )
    assert info.pixels == 960


def test_read_8bit_png_scales_to_unit_range(tmp_path: Path) -> None:
    # Prepare
    pixels = gradient_u8()
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)

    # Execute
    gray = read_grayscale(path)

    # Assert
    assert gray.dtype == np.float32
    assert gray.shape == (24, 40)
    np.testing.assert_allclose(gray, pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_16bit_grayscale_keeps_full_precision(tmp_path: Path, suffix: str) -> None:
    # Prepare: values over the whole 16-bit range, with neighbours one count apart.
    values = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    values[1, 0], values[1, 1] = 30000, 30001
    path = tmp_path / f"sem16{suffix}"
    Image.fromarray(values).save(path)

    # Execute
    info = probe_image(path)
    gray = read_grayscale(path)

    # Assert
    assert info.bit_depth == 16
    assert info.mode.startswith("I;16")
    assert gray.dtype == np.float32
    assert gray.min() == 0.0
    assert gray.max() == 1.0
    assert gray[1, 0] != gray[1, 1]
    np.testing.assert_allclose(gray * 65535.0, values, atol=0.01)


def test_big_endian_16bit_tiff_is_read_like_little_endian(tmp_path: Path) -> None:
    # Prepare
    values = np.array([[0, 1, 256, 65535]], dtype=np.uint16)
    path = tmp_path / "be.tif"
    Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes()).save(path)

    # Execute
    gray = read_grayscale(path)

    # Assert
    np.testing.assert_allclose(gray * 65535.0, values, atol=0.01)


def test_32bit_integer_tiff_within_16bit_range_is_divided_by_65535(tmp_path: Path) -> None:
    # Prepare
    values = np.array([[0, 1000, 65535]], dtype=np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(values).save(path)

    # Execute
    gray = read_grayscale(path)

    # Assert
    assert probe_image(path).mode == "I"
    np.testing.assert_allclose(gray, values / 65535.0, atol=1e-6)


def test_float_tiff_outside_unit_range_is_rescaled(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[-2.0, 0.0, 6.0]], dtype=np.float32)).save(path)

    # Execute
    gray = read_grayscale(path)

    # Assert
    np.testing.assert_allclose(gray, [[0.0, 0.25, 1.0]], atol=1e-6)


def test_float_tiff_inside_unit_range_is_unchanged(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.1, 0.5, 0.9]], dtype=np.float32)).save(path)

    # Execute
    gray = read_grayscale(path)

    # Assert
    np.testing.assert_allclose(gray, [[0.1, 0.5, 0.9]], atol=1e-6)


def test_float_tiff_with_nan_is_unreadable(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[0.1, np.nan]], dtype=np.float32)).save(path)

    # Execute / Assert
    with pytest.raises(UnreadableImageError, match="NaN"):
        read_grayscale(path)


def test_rgba_png_becomes_luminance_ignoring_alpha(tmp_path: Path) -> None:
    # Prepare: pure red, green, blue and white, each with a different alpha.
    rgba = np.array(
        [[[255, 0, 0, 0], [0, 255, 0, 80], [0, 0, 255, 160], [255, 255, 255, 255]]],
        dtype=np.uint8,
    )
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)

    # Execute
    info = probe_image(path)
    gray = read_grayscale(path)

    # Assert
    assert (info.mode, info.channels) == ("RGBA", 4)
    np.testing.assert_allclose(gray, [[0.299, 0.587, 0.114, 1.0]], atol=1e-5)


@pytest.mark.parametrize("mode", ["RGB", "P", "LA", "1"])
def test_other_modes_read_as_unit_grayscale(tmp_path: Path, mode: str) -> None:
    # Prepare
    base = Image.fromarray(gradient_u8())
    path = tmp_path / f"img_{mode}.png"
    base.convert(mode).save(path)

    # Execute
    gray = read_grayscale(path)

    # Assert
    assert gray.shape == (24, 40)
    assert gray.dtype == np.float32
    assert 0.0 <= float(gray.min()) <= float(gray.max()) <= 1.0


def test_1bit_bmp_reads_as_zero_and_one(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "mask.bmp"
    Image.fromarray(np.array([[True, False], [False, True]])).save(path)

    # Execute
    info = probe_image(path)
    gray = read_grayscale(path)

    # Assert
    assert (info.format, info.bit_depth) == ("BMP", 1)
    np.testing.assert_array_equal(gray, [[1.0, 0.0], [0.0, 1.0]])


def test_truncated_jpeg_is_unreadable_but_its_header_probes(tmp_path: Path) -> None:
    # Prepare
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(noise).save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])

    # Execute
    info = probe_image(cut)
    with pytest.raises(UnreadableImageError) as caught:
        read_grayscale(cut)

    # Assert
    assert (info.width, info.height) == (128, 128)
    assert caught.value.path == cut
    assert "truncated" in caught.value.reason
    assert "cut.jpg" in str(caught.value)


def test_truncated_png_is_unreadable(tmp_path: Path) -> None:
    # Prepare
    noise = np.random.default_rng(1).integers(0, 256, (128, 128), dtype=np.uint8)
    path = tmp_path / "cut.png"
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    # Execute / Assert
    with pytest.raises(UnreadableImageError, match=r"cut\.png"):
        read_grayscale(path)


def test_zero_byte_file_is_unreadable(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "empty.png"
    path.touch()

    # Execute / Assert
    with pytest.raises(UnreadableImageError, match="empty"):
        probe_image(path)


def test_text_file_named_png_is_unreadable(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")

    # Execute
    with pytest.raises(UnreadableImageError) as caught:
        probe_image(path)

    # Assert
    assert issubclass(type(caught.value), ValueError)
    assert caught.value.path == path
    assert "not a readable" in caught.value.reason


def test_unsupported_format_with_image_suffix_is_unreadable(tmp_path: Path) -> None:
    # Prepare: a GIF in disguise.
    path = tmp_path / "disguised.png"
    Image.fromarray(gradient_u8()).save(path, format="GIF")

    # Execute / Assert
    with pytest.raises(UnreadableImageError, match="not a readable"):
        read_grayscale(path)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match="cannot access"):
        probe_image(tmp_path / "nowhere.png")


def test_huge_png_header_is_refused_without_decoding(tmp_path: Path) -> None:
    # Prepare: 20000 x 20000 = 400 M pixels, above PIL's own hard limit as well.
    path = write_png_header(tmp_path / "huge.png", 20000, 20000)

    # Execute
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning may escape either
        with pytest.raises(UnreadableImageError, match="too many pixels"):
            probe_image(path)
        with pytest.raises(UnreadableImageError, match="too many pixels"):
            read_grayscale(path)
    elapsed = time.perf_counter() - start

    # Assert
    assert elapsed < 2.0


def test_header_between_our_limit_and_pils_is_refused_by_ours(tmp_path: Path) -> None:
    # Prepare: 10000 x 10000 is above DEFAULT_MAX_PIXELS and above PIL's warning threshold.
    path = write_png_header(tmp_path / "big.png", 10000, 10000)

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UnreadableImageError) as caught:
            read_grayscale(path)

    # Assert
    assert "10000x10000" in caught.value.reason
    assert str(DEFAULT_MAX_PIXELS) in caught.value.reason


def test_max_pixels_parameter_is_honoured(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "a.png"
    Image.fromarray(gradient_u8()).save(path)  # 960 pixels

    # Execute / Assert
    assert probe_image(path, max_pixels=960).pixels == 960
    with pytest.raises(UnreadableImageError, match="max_pixels"):
        probe_image(path, max_pixels=959)
    with pytest.raises(UnreadableImageError, match="max_pixels"):
        read_grayscale(path, max_pixels=959)


def test_file_digest_is_sha256_of_content(tmp_path: Path) -> None:
    # Prepare: larger than one read chunk.
    data = bytes(range(256)) * 9000
    path = tmp_path / "blob.bin"
    path.write_bytes(data)

    # Execute
    digest = file_digest(path)

    # Assert
    assert digest == hashlib.sha256(data).hexdigest()


# ---- bytes and arrays (served requests) follow the file rules ----


@pytest.mark.parametrize("name", ["gray.png", "gray16.tif", "gray16.png", "rgba.png", "gray.jpg"])
def test_bytes_decode_exactly_like_the_file(tmp_path: Path, name: str) -> None:
    # Prepare
    gray = gradient_u8()
    image = {
        "gray.png": Image.fromarray(gray),
        "gray16.tif": Image.fromarray(gray.astype(np.uint16) * 257 + 3),
        "gray16.png": Image.fromarray(gray.astype(np.uint16) * 251),
        "rgba.png": Image.fromarray(np.dstack([gray, gray[::-1], 255 - gray, gray]), "RGBA"),
        "gray.jpg": Image.fromarray(gray),
    }[name]
    path = tmp_path / name
    image.save(path)
    # Execute
    decoded = decode_grayscale(path.read_bytes(), "request")
    # Assert
    np.testing.assert_array_equal(decoded, read_grayscale(path))


def test_empty_or_truncated_bytes_are_unreadable_and_named(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "g.png"
    Image.fromarray(gradient_u8()).save(path)
    # Execute / Assert
    with pytest.raises(UnreadableImageError, match="request: no image data"):
        decode_grayscale(b"", "request")
    with pytest.raises(UnreadableImageError, match="request: cannot decode pixels"):
        decode_grayscale(path.read_bytes()[:-30], "request")


def test_arrays_follow_the_file_rules(tmp_path: Path) -> None:
    # Prepare
    gray = gradient_u8()
    rgb = np.dstack([gray, gray[::-1], 255 - gray])
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    wide = gray.astype(np.uint16) * 257
    # Execute / Assert: each dtype and layout maps to [0, 1] as the image files do
    np.testing.assert_array_equal(grayscale_from_array(gray), gray / np.float32(255))
    np.testing.assert_array_equal(grayscale_from_array(wide), wide / np.float32(65535))
    np.testing.assert_allclose(
        grayscale_from_array(rgb), read_grayscale(tmp_path / "rgb.png"), atol=1e-6
    )
    rgba = np.dstack([rgb, np.zeros_like(gray)])
    np.testing.assert_allclose(grayscale_from_array(rgba), grayscale_from_array(rgb), atol=1e-6)
    np.testing.assert_array_equal(grayscale_from_array(gray[..., None]), gray / np.float32(255))
    assert grayscale_from_array(np.array([[-2.0, 2.0]])).tolist() == [[0.0, 1.0]]
    assert grayscale_from_array(np.array([[True, False]])).tolist() == [[1.0, 0.0]]
    assert grayscale_from_array(gray).dtype == np.float32


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array(["a", "b"]), "dtype <U1 is not an image"),
        (np.zeros((2, 2, 5)), r"shape \(2, 2, 5\) is not an image"),
        (np.zeros(4), r"shape \(4,\) is not an image"),
        (np.zeros((0, 3)), "has no pixels"),
        (np.array([[np.inf]]), "NaN or infinite"),
        (np.zeros((30, 40)), "above the limit of 1000"),
    ],
)
def test_arrays_that_are_not_images_are_unreadable(values: np.ndarray, message: str) -> None:
    # Execute / Assert
    with pytest.raises(UnreadableImageError, match=message):
        grayscale_from_array(values, "request", max_pixels=1000)
