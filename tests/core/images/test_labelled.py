"""Training data from a member's folder: bad files are skipped, never fatal."""

from __future__ import annotations

import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.images.augmentation import Augmentation, parse_augmentation
from fractofl.core.images.labelled import (
    IDENTITY_MODULUS,
    NoUsableImagesError,
    folder_identity,
    load_labelled_tensors,
    make_loader,
    split_train_val,
)
from fractofl.core.learning.device import resolve_device
from fractofl.core.learning.training import evaluate, train
from fractofl.core.model.architectures import build_model, default_preprocessing


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _messy_member(root: Path) -> Path:
    """Two good images per class plus one of every kind of bad file."""
    rng = np.random.default_rng(0)
    for name in DEFAULT_CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(
                root / name / f"ok{i}.png"
            )
    fatigue = root / "fatigue"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(fatigue / "cut.jpg")
    data = (fatigue / "cut.jpg").read_bytes()
    (fatigue / "cut.jpg").write_bytes(data[: len(data) // 2])
    sem16 = (np.arange(40 * 40, dtype=np.uint16) * 40).reshape(40, 40)
    Image.fromarray(sem16).save(fatigue / "sem16.tif")
    rgba = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "ductile" / "rgba.png")
    (root / "ductile" / "empty.png").write_bytes(b"")
    (root / "cleavage" / "notes.png").write_text("this is a text file, not an image")
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    (root / "intergranular" / "huge.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")
    )
    return root


def test_bad_files_are_skipped_with_a_warning_naming_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    root = _messy_member(tmp_path / "member")
    prep = default_preprocessing("small_cnn", 32)
    # Execute
    with caplog.at_level(logging.WARNING, logger="fractofl"):
        data = load_labelled_tensors(root, DEFAULT_CLASSES, prep)
    # Assert: 8 good + 16-bit TIFF + RGBA PNG are used; the four broken ones skipped.
    assert len(data) == 10
    assert data.x.shape == (10, 1, 32, 32)
    skipped = sorted(p.name for p, _ in data.skipped)
    assert skipped == ["cut.jpg", "empty.png", "huge.png", "notes.png"]
    for name in skipped:
        assert name in caplog.text


def test_training_runs_on_a_messy_folder(tmp_path: Path) -> None:
    root = _messy_member(tmp_path / "member")
    data = load_labelled_tensors(root, DEFAULT_CLASSES, default_preprocessing("small_cnn", 32))
    model = build_model("small_cnn", num_classes=4, width=4)
    augmentation = Augmentation(parse_augmentation("fracture"), pixel_std=0.25)
    loader = make_loader(data, batch_size=4, shuffle=True, augmentation=augmentation, seed=0)
    result = train(model, loader, 1, 0.01, 0.9, 0.0, resolve_device("cpu"))
    scored = evaluate(model, make_loader(data, 4, False, None, 0), 4, resolve_device("cpu"))
    assert result.examples == 10 and np.isfinite(result.loss)
    assert scored.examples == 10 and scored.confusion.sum() == 10


def test_sixteen_bit_precision_reaches_the_tensor(tmp_path: Path) -> None:
    # Two 16-bit levels that collapse to one 8-bit level must stay apart.
    (tmp_path / "fatigue").mkdir()
    pixels = np.full((16, 16), 30000, dtype=np.uint16)
    pixels[:, 8:] = 30100  # both map to 8-bit value 116
    Image.fromarray(pixels).save(tmp_path / "fatigue" / "a.tif")
    data = load_labelled_tensors(tmp_path, DEFAULT_CLASSES, default_preprocessing("small_cnn", 16))
    assert float(data.x[0, 0, 0, 12] - data.x[0, 0, 0, 2]) > 0


def test_folder_without_usable_images_says_how_to_check(tmp_path: Path) -> None:
    (tmp_path / "fatigue").mkdir()
    (tmp_path / "fatigue" / "x.png").write_text("nope")
    with pytest.raises(NoUsableImagesError, match="fractofl data check"):
        load_labelled_tensors(tmp_path, DEFAULT_CLASSES, default_preprocessing("small_cnn", 16))


def test_train_val_split_is_deterministic_and_disjoint() -> None:
    train_a, val_a = split_train_val(20, 0.25, seed=1)
    train_b, val_b = split_train_val(20, 0.25, seed=1)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)
    assert len(val_a) == 5 and not set(train_a) & set(val_a)
    assert len(split_train_val(3, 0.05, seed=1)[1]) == 1  # a split always gets one


def test_a_folder_is_named_by_what_it_holds_wherever_it_is(tmp_path: Path) -> None:
    # Prepare: one member folder, a copy elsewhere, and a copy with one image changed
    original = _messy_member(tmp_path / "here" / "member")
    copy = Path(shutil.copytree(original, tmp_path / "there" / "renamed"))
    changed = Path(shutil.copytree(original, tmp_path / "changed"))
    first = sorted((changed / "fatigue").glob("*.png"))[0]
    first.write_bytes(first.read_bytes() + b"\0")
    # Execute
    identities = [folder_identity(p, DEFAULT_CLASSES) for p in (original, copy, changed)]
    # Assert: the same content is the same member, a changed one another
    assert identities[0] == identities[1] != identities[2]
    assert 0 <= identities[0] < IDENTITY_MODULUS
