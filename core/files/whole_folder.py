"""Folders written whole: built in a hidden sibling, then renamed into place.

A writer that fails or is interrupted part-way leaves the target as it was (absent,
empty, or the previous version) and at most a hidden ``.<name>.partial-*`` sibling,
which the next writer of the same target removes. :func:`check_can_write` tells, before
anything is written, whether the target's file system has the room and the permission.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL_INFIX = ".partial-"
OLD_INFIX = ".old-"


class CannotWriteError(PermissionError):
    """The target folder cannot be written: no permission, or not enough free space."""


def existing_ancestor(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_can_write(target: Path, needed_bytes: int) -> None:
    """Raise :class:`CannotWriteError` unless a folder of about ``needed_bytes`` can be
    written beside ``target`` (the folder that would hold it is writable, or can be
    created, and its file system has the room)."""
    anchor = existing_ancestor(target.parent)
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise CannotWriteError(
            f"cannot write {target}: {anchor} is not a folder this user may write to; "
            "choose another location or fix its permissions"
        )
    free = shutil.disk_usage(anchor).free
    if free < needed_bytes:
        raise CannotWriteError(
            f"cannot write {target}: it needs about {needed_bytes / 1e6:.0f} MB and "
            f"{anchor} has {free / 1e6:.0f} MB free; free some space or choose another location"
        )


def remove_partial_siblings(target: Path) -> list[Path]:
    """Delete what interrupted writers of ``target`` left beside it; return those paths."""
    if not target.parent.is_dir():
        return []
    stale = [
        p
        for infix in (PARTIAL_INFIX, OLD_INFIX)
        for p in target.parent.glob(f".{target.name}{infix}*")
        if p.is_dir()
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


@contextlib.contextmanager
def folder_written_whole(target: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``target`` to build the folder in; when the block
    ends without an exception, the sibling replaces ``target`` (an empty folder there, or
    a previous version, which the caller has decided may go). On any exception the
    sibling is removed and ``target`` is untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_partial_siblings(target)
    staging = _new_sibling(target, PARTIAL_INFIX)
    staging.mkdir()
    try:
        yield staging
        _replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _new_sibling(target: Path, infix: str) -> Path:
    # Not tempfile.mkdtemp: its folders are private (0700), a data set's are not.
    return target.parent / f".{target.name}{infix}{secrets.token_hex(6)}"


def _replace(staging: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        staging.rename(target)
        return
    # A previous version: move it aside first, so the target is never half of each.
    old = _new_sibling(target, OLD_INFIX)
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
