"""The on-disk image cache: images decoded once, reused by later runs, rebuilt when
corrupt or foreign, and a full disk reported without harm to the images."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.images.cached_images import load_cached_images
from fractofl.core.images.labelled import load_labelled_tensors
from fractofl.core.images.pixel_store import (
    MANIFEST_SUFFIX,
    SHARD_SUFFIX,
    CorruptCacheError,
    PixelStore,
    store_folder,
)
from fractofl.core.images.preprocessing import Preprocessing

PREP = Preprocessing(image_size=24)


def _write_images(root: Path, count: int, start: int = 0, size: int = 40) -> list[Path]:
    paths = []
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        folder = root / DEFAULT_CLASSES[i % len(DEFAULT_CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img-{i:03d}.png"
        Image.fromarray(rng.integers(0, 65535, (size, size + 8), dtype=np.uint16)).save(path)
        paths.append(path)
    return paths


def _shards(cache: Path, prep: Preprocessing = PREP) -> list[Path]:
    return sorted(store_folder(cache, prep.cache_key()).glob(f"*{SHARD_SUFFIX}"))


def _stack(data) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.stack([data.image(i) for i in range(len(data))])


def test_second_load_decodes_nothing_and_gives_the_same_tensors(tmp_path: Path) -> None:
    images, cache = tmp_path / "images", tmp_path / "cache"
    _write_images(images, 12)
    first = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    assert (first.report.decoded, first.report.reused, first.report.hashed) == (12, 0, 12)
    second = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    assert (second.report.decoded, second.report.reused, second.report.hashed) == (0, 12, 0)
    in_memory = load_labelled_tensors(images, DEFAULT_CLASSES, PREP)
    # Bit-identical to decoding in memory: a cached run trains exactly as before.
    assert torch.equal(_stack(second), in_memory.x)
    assert torch.equal(second.y, in_memory.y)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700  # the member's images, prepared


def test_ten_new_images_decode_ten(tmp_path: Path) -> None:
    images, cache = tmp_path / "images", tmp_path / "cache"
    _write_images(images, 20)
    load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    _write_images(images, 10, start=20)
    again = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    assert (again.report.decoded, again.report.reused, len(again)) == (10, 20, 30)


def test_changed_file_is_decoded_again_and_a_touched_or_copied_one_is_not(
    tmp_path: Path,
) -> None:
    images, cache = tmp_path / "images", tmp_path / "cache"
    paths = _write_images(images, 6)
    load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    os.utime(paths[0], ns=(1, 1))  # same content, other modification time
    Image.fromarray(np.zeros((40, 48), dtype=np.uint8)).save(paths[1])  # new content
    (paths[2].parent / "copy.png").write_bytes(paths[2].read_bytes())  # a copy
    again = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    assert (again.report.decoded, again.report.hashed, len(again)) == (1, 3, 7)
    assert torch.equal(_stack(again), load_labelled_tensors(images, DEFAULT_CLASSES, PREP).x)


def test_another_preprocessing_has_its_own_cache(tmp_path: Path) -> None:
    images, cache = tmp_path / "images", tmp_path / "cache"
    _write_images(images, 4)
    load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    other = Preprocessing(image_size=16)
    data = load_cached_images(images, DEFAULT_CLASSES, other, cache)
    assert data.report.decoded == 4 and data.image(0).shape == (1, 16, 16)
    # Normalisation is applied when read: it does not need a cache of its own.
    renormalised = load_cached_images(images, DEFAULT_CLASSES, Preprocessing(24, mean=0.3), cache)
    assert renormalised.report.decoded == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "garbage-manifest"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    images, cache = tmp_path / "images", tmp_path / "cache"
    _write_images(images, 8)
    load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    (shard,) = _shards(cache)
    manifest = shard.with_suffix(MANIFEST_SUFFIX)
    if damage == "flip":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif damage == "foreign":  # a shard written by another preprocessing, moved here
        document = json.loads(manifest.read_text())
        document["preprocessing"] = {"image_size": 99}
        manifest.write_text(json.dumps(document))
    else:
        manifest.write_text("{not json")
    if damage == "flip":  # found when the damaged rows are read, never used silently
        loaded = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
        with pytest.raises(CorruptCacheError, match="fail their CRC"):
            _stack(loaded)
    rebuilt = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    assert rebuilt.report.decoded == 8
    assert len(rebuilt.report.dropped) == (0 if damage == "flip" else 1)
    assert not shard.exists()
    assert torch.equal(_stack(rebuilt), load_labelled_tensors(images, DEFAULT_CLASSES, PREP).x)
    after = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    assert after.report.decoded == 0 and not after.report.dropped


def test_a_full_disk_is_a_clear_error_and_leaves_the_images_and_cache_as_they_were(
    tmp_path: Path,
) -> None:
    images, cache = tmp_path / "images", tmp_path / "cache"
    paths = _write_images(images, 8)
    before = {p: p.read_bytes() for p in paths}
    # A real write failure: the kernel refuses to let the file grow past RLIMIT_FSIZE
    # (EFBIG, with SIGXFSZ ignored), as it refuses a full disk (ENOSPC).
    script = f"""
import resource, signal, sys
from pathlib import Path
from fractofl.core.images.cached_images import load_cached_images
from fractofl.core.images.pixel_store import ImageCacheError
from fractofl.core.images.preprocessing import Preprocessing
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
images, cache = Path({str(images)!r}), Path({str(cache)!r})
try:
    load_cached_images(images, {list(DEFAULT_CLASSES)!r}, Preprocessing(24), cache)
except ImageCacheError as exc:
    print(exc)
    sys.exit(3)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 3, done.stderr
    assert "cannot write the image cache" in done.stdout
    assert "disk is full or the file too large" in done.stdout
    assert "Your images are untouched" in done.stdout
    assert {p: p.read_bytes() for p in paths} == before
    folder = store_folder(cache, PREP.cache_key())
    assert not list(folder.glob("*")) and not list(folder.glob(".*"))  # nothing half-written
    assert load_cached_images(images, DEFAULT_CLASSES, PREP, cache).report.decoded == 8


def test_unreadable_files_are_skipped_and_named(tmp_path: Path) -> None:
    images, cache = tmp_path / "images", tmp_path / "cache"
    _write_images(images, 4)
    bad = images / DEFAULT_CLASSES[0] / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    data = load_cached_images(images, DEFAULT_CLASSES, PREP, cache)
    assert len(data) == 4 and [p for p, _ in data.report.skipped] == [bad]
    assert "1 skipped (unreadable or unusable" in data.report.summary()


def test_a_tile_read_checks_only_the_blocks_it_reads(tmp_path: Path) -> None:
    store = PixelStore(tmp_path / "cache", {"test": 1}).open()
    pixels = np.random.default_rng(0).random((200, 50), dtype=np.float32)
    with store.writer() as writer:
        stored = writer.add("a" * 64, pixels)
    assert len(stored.crcs) == 4  # 64 + 64 + 64 + 8 rows
    assert np.array_equal(stored.read_rows(130, 16), pixels[130:146])
    assert np.array_equal(stored.read(), pixels)
    data = bytearray(stored.shard.read_bytes())
    data[stored.offset + 150 * 50 * 4] ^= 0xFF  # a byte of row 150 (third block)
    stored.shard.write_bytes(bytes(data))
    assert np.array_equal(stored.read_rows(0, 16), pixels[:16])  # other blocks still read
    with pytest.raises(CorruptCacheError, match="rows 128-191 fail their CRC"):
        stored.read_rows(140, 16)
    assert not stored.shard.exists()  # dropped: the next preparation rebuilds it
