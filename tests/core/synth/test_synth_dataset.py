"""The synthetic data set on disk: deterministic, complete, split as asked."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.images.partition import PartitionError
from fractofl.core.synth.dataset import (
    MANIFEST,
    PNG_OVERHEAD_BYTES,
    ForeignFolderError,
    OtherSynthSetError,
    UnknownSynthClassError,
    estimated_bytes,
    generate_dataset,
    holdout_dir,
    is_generated,
    member_dir,
)
from tests.conftest import easy_spec


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    # Prepare
    spec = easy_spec(per_class=12)
    # Execute
    generate_dataset(tmp_path / "a", spec)
    generate_dataset(tmp_path / "b", spec)
    generate_dataset(tmp_path / "c", replace(spec, seed=spec.seed + 1))
    # Assert
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")


def test_members_and_test_set_hold_the_configured_classes(easy_dataset: Path) -> None:
    manifest = json.loads((easy_dataset / MANIFEST).read_text())
    counts = manifest["counts"]
    spec = easy_spec()
    # Every training image went to exactly one member; the test set is balanced.
    for name in DEFAULT_CLASSES:
        assert sum(counts[f"members/member-{m:02d}"][name] for m in range(2)) == spec.per_class
        assert counts["coordinator-test"][name] == spec.test_per_class
    for member in range(2):
        folder = member_dir(easy_dataset, member)
        on_disk = {d.name: len(list(d.glob("*.png"))) for d in folder.iterdir()}
        assert {
            k: v for k, v in counts[folder.relative_to(easy_dataset).as_posix()].items() if v
        } == on_disk
    image = Image.open(next(holdout_dir(easy_dataset).rglob("*.png")))
    assert image.mode == "L" and image.size == (48, 48)


def test_dirichlet_split_is_non_iid(tmp_path: Path) -> None:
    # With alpha = 0.1 most members are dominated by one or two classes.
    spec = replace(easy_spec(members=4, per_class=40), alpha=0.1, test_per_class=1)
    manifest = generate_dataset(tmp_path, spec)
    shares = []
    for member in range(4):
        counts = np.array(list(manifest["counts"][f"members/member-{member:02d}"].values()))
        shares.append(counts.max() / counts.sum())
    assert np.mean(shares) > 0.5


def test_manifest_marks_the_spec_and_regeneration_is_skipped(tmp_path: Path) -> None:
    spec = easy_spec(per_class=10)
    generate_dataset(tmp_path, spec)
    assert is_generated(tmp_path, spec)
    assert not is_generated(tmp_path, replace(spec, alpha=0.3))


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "fatigue").mkdir()
    (tmp_path / "fatigue" / "real-failure.png").write_bytes(b"precious")
    with pytest.raises(ForeignFolderError, match=r"not written by `fractofl synth`.*data=folders"):
        generate_dataset(tmp_path, easy_spec(per_class=10))
    assert (tmp_path / "fatigue" / "real-failure.png").read_bytes() == b"precious"


def test_unknown_classes_fail_before_anything_is_written(tmp_path: Path) -> None:
    # Prepare
    root = tmp_path / "digits"
    spec = replace(easy_spec(per_class=4), classes=("zero", "one"))
    # Execute / Assert
    with pytest.raises(UnknownSynthClassError, match=r"also names zero, one.*data=folders"):
        generate_dataset(root, spec)
    assert not root.exists() and list(tmp_path.iterdir()) == []


def test_an_impossible_split_fails_before_anything_is_written(tmp_path: Path) -> None:
    # Prepare: 12 members cannot each get 8 images of a 4 x 4 pool
    spec = replace(easy_spec(members=12, per_class=4), min_per_member=8)
    # Execute / Assert
    with pytest.raises(PartitionError):
        generate_dataset(tmp_path / "set", spec)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_part_way_leaves_the_previous_set_whole(tmp_path: Path) -> None:
    # Prepare: a complete set, then a replacement that fails after a few images
    root = tmp_path / "set"
    old = easy_spec(per_class=6)
    generate_dataset(root, old)
    before = _tree(root)

    def interrupt(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    # Execute
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(root, replace(old, seed=old.seed + 1), interrupt, overwrite=True)
    # Assert: the old set, unchanged and still marked, and no partial folder beside it
    assert _tree(root) == before and is_generated(root, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_a_set_with_other_settings_is_replaced_only_when_asked(tmp_path: Path) -> None:
    # Prepare
    spec = easy_spec(per_class=6)
    generate_dataset(tmp_path, spec)
    other = replace(spec, alpha=0.3, seed=spec.seed + 1)
    # Execute / Assert: refused, naming each difference and the way to allow it
    with pytest.raises(OtherSynthSetError) as refused:
        generate_dataset(tmp_path, other)
    message = str(refused.value)
    assert "data.alpha=1.0 (asked: 0.3)" in message and "data.synth.seed=" in message
    assert "data.synth.overwrite=true" in message and is_generated(tmp_path, spec)
    generate_dataset(tmp_path, other, overwrite=True)
    assert is_generated(tmp_path, other)


def test_a_set_needs_room_on_disk() -> None:
    # Execute
    needed = estimated_bytes(easy_spec(per_class=10))
    # Assert: 4 classes x (10 + test) images of 48 x 48 pixels plus overhead
    spec = easy_spec(per_class=10)
    images = len(spec.classes) * (spec.per_class + spec.test_per_class)
    assert needed == images * (48 * 48 + PNG_OVERHEAD_BYTES)
