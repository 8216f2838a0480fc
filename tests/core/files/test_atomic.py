"""Atomic writes, interrupted for real: a writer process killed with SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fractofl.core.files.atomic import atomic_write_bytes, atomic_writer, remove_stale_temporaries

SLOW_WRITER = """
import sys, time
from pathlib import Path
from fractofl.core.files.atomic import atomic_writer
with atomic_writer(Path(sys.argv[1])) as handle:
    for _ in range(10_000):
        handle.write(b"n" * 65536)
        handle.flush()
        time.sleep(0.01)
"""


def test_a_killed_writer_leaves_the_old_file_whole(tmp_path: Path) -> None:
    # Prepare: a complete file, then a slow writer replacing it.
    target = tmp_path / "metrics.csv"
    atomic_write_bytes(target, b"old complete content\n")
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)])
    # Execute: kill it once it has written part of the new content.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [p for p in tmp_path.glob(".metrics.csv.*") if p.stat().st_size > 1_000_000]
        if partial:
            break
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    # Assert: the destination still holds the old content; only a hidden temporary remains,
    # and it is recognised as stale.
    assert writer.returncode == -signal.SIGKILL
    assert partial, "the writer never started writing"
    assert target.read_bytes() == b"old complete content\n"
    stale = remove_stale_temporaries(tmp_path)
    assert [p.name.startswith(".metrics.csv.") for p in stale] == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_an_exception_while_writing_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    atomic_write_bytes(target, b"v1")
    with pytest.raises(RuntimeError, match="disk full"), atomic_writer(target) as handle:
        handle.write(b"half of v2")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_a_completed_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.bin"
    atomic_write_bytes(target, b"v1")
    atomic_write_bytes(target, b"v2")
    assert target.read_bytes() == b"v2"
    assert [p.name for p in target.parent.iterdir()] == ["state.bin"]
