"""Folders written whole: the target is the old folder or the new one, never half."""

from __future__ import annotations

from pathlib import Path

import pytest

from fractofl.core.files.whole_folder import (
    CannotWriteError,
    check_can_write,
    folder_written_whole,
)


def _write(folder: Path, text: str) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "file.txt").write_text(text)


def test_a_new_folder_appears_only_when_complete(tmp_path: Path) -> None:
    # Prepare
    target = tmp_path / "set"
    # Execute
    with folder_written_whole(target) as staging:
        _write(staging, "new")
        assert not target.exists() and staging.name.startswith(".set.partial-")
    # Assert
    assert (target / "sub" / "file.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_an_error_leaves_the_previous_version_and_nothing_beside_it(tmp_path: Path) -> None:
    # Prepare
    target = tmp_path / "set"
    target.mkdir()
    _write(target, "old")
    # Execute
    with pytest.raises(RuntimeError), folder_written_whole(target) as staging:
        _write(staging, "half")
        raise RuntimeError("disk full")
    # Assert
    assert (target / "sub" / "file.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_a_previous_version_is_replaced_and_leftovers_of_a_killed_writer_go(
    tmp_path: Path,
) -> None:
    # Prepare: an old version, and what a SIGKILLed writer left
    target = tmp_path / "set"
    target.mkdir()
    _write(target, "old")
    (tmp_path / ".set.partial-dead").mkdir()
    (tmp_path / ".other.partial-keep").mkdir()
    # Execute
    with folder_written_whole(target) as staging:
        _write(staging, "new")
    # Assert: only the target's own leftovers are removed
    assert (target / "sub" / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-keep", "set"]


def test_room_and_a_writable_parent_are_checked_first(tmp_path: Path) -> None:
    # Prepare
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # Execute / Assert
    check_can_write(tmp_path / "new" / "set", 1)
    with pytest.raises(CannotWriteError, match=r"needs about .* MB free"):
        check_can_write(tmp_path / "set", 1 << 62)
    with pytest.raises(CannotWriteError, match="is not a folder this user may write to"):
        check_can_write(blocker / "set", 1)
