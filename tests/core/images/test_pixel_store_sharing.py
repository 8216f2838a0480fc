"""Processes that share one image cache (simulated members, a member's `member baseline`
beside its ClientApp): opening the store clears what dead writers left, never a live
writer's file (CI once failed a member's commit that way: another member opening the
store deleted its manifest's temporary file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fractofl.core.files.atomic import atomic_writer
from fractofl.core.images.pixel_store import PixelStore

KEY = {"image_size": 32, "test": "sharing"}


def _dead_pid() -> int:
    """The process id of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_a_live_writers_temporary_file_survives_another_process_opening_the_store(
    tmp_path: Path,
) -> None:
    # Prepare: this process is writing a file in the store's folder (a shard's manifest)
    folder = PixelStore(tmp_path, KEY).open().folder
    manifest = folder / "0123abcd.json"
    with atomic_writer(manifest) as handle:
        handle.write(b"{}")
        # Execute: another reader opens the store meanwhile
        PixelStore(tmp_path, KEY).open()
    # Assert: the write went through
    assert manifest.read_bytes() == b"{}"


def test_opening_the_store_removes_what_dead_writers_left_and_nothing_else(
    tmp_path: Path,
) -> None:
    # Prepare: a dead writer's shard and manifest temporaries, and one whose name says no
    # writer (fractofl before writers' names carried their process id)
    folder = PixelStore(tmp_path, KEY).open().folder
    dead = _dead_pid()
    shard_tmp = folder / f".0123abcd.{dead}.k2j4h5g6.tmp"
    manifest_tmp = folder / f".0123abcd.json.{dead}.x8c7v6b5.tmp"
    unknown = folder / ".0123abcd.json.q1w2e3r4.tmp"
    for path in (shard_tmp, manifest_tmp, unknown):
        path.write_bytes(b"partial")
    # Execute
    PixelStore(tmp_path, KEY).open()
    # Assert
    assert not shard_tmp.exists() and not manifest_tmp.exists()
    assert unknown.exists()
