"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The bytes go to a temporary file in the same folder, are flushed and fsynced, and the
temporary file is renamed over the destination (``os.replace`` is atomic on POSIX and
Windows within one file system); the folder is fsynced so the rename survives a crash.
A process killed mid-write leaves at most a hidden ``.<name>.<pid>.*.tmp`` file (the
writer's process id in its name, so that a reader sharing the folder can tell a live
writer's file from an abandoned one), which :func:`remove_stale_temporaries` clears.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot
    be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):  # not every platform lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` only when the block ends
    without an exception."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` and atomically put what it wrote at ``path``."""
    with atomic_writer(path) as handle:
        write(handle)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda handle: handle.write(data))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporaries left in ``folder`` by writers that were killed; return them."""
    stale = [p for p in folder.glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def mode_readable_by_others(path: Path) -> int | None:
    """``path``'s permission bits when its group or others may read it (a secret key
    must not be), else ``None``; always ``None`` where permissions are not POSIX."""
    if os.name != "posix":
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 else None
