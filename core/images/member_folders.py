"""Existing member folders and the coordinator's test folder (``data=folders``).

A member folder holds one sub-folder per class (``<member>/<class>/<image>``), as a real
member's does. The members are given either as a root whose sub-folders are the members
(hidden folders and the test folder, when it lies inside, are left out) or as an explicit
list. Everything here only reads: a run on someone's own images never writes into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LIST_SEPARATOR = ","  # Flower's run config carries lists as comma-separated text


class MemberFoldersError(ValueError):
    """The member folders or the test folder are missing or not laid out as expected."""


@dataclass(frozen=True)
class MemberFolders:
    """The resolved (absolute) member folders, in order, and the test folder."""

    members: tuple[Path, ...]
    test: Path


def resolve_member_folders(
    root: Path | None, member_dirs: Sequence[Path], test_dir: Path, classes: Sequence[str]
) -> MemberFolders:
    """The members under ``root`` (or ``member_dirs`` when given) and the test folder,
    each checked to hold at least one folder named after a class of ``classes``."""
    test = test_dir.expanduser().resolve()
    _check_class_folders(test, classes, "the coordinator's test folder (data.test_dir)")
    if member_dirs:
        members = [Path(p).expanduser().resolve() for p in member_dirs]
    elif root is not None:
        members = _sub_folders(root.expanduser().resolve(), test)
    else:
        raise MemberFoldersError(
            "data=folders needs the members: data.root (a folder whose sub-folders are the "
            "members) or data.member_dirs (the member folders themselves)"
        )
    duplicates = sorted({str(p) for p in members if members.count(p) > 1})
    if duplicates:
        raise MemberFoldersError(f"data.member_dirs names {', '.join(duplicates)} twice")
    for member in members:
        if member == test:
            raise MemberFoldersError(
                f"{member} is both a member folder and the test folder (data.test_dir): the "
                "coordinator must score on images no member trains on"
            )
        if LIST_SEPARATOR in str(member):
            raise MemberFoldersError(
                f"{member}: member folder paths may not contain '{LIST_SEPARATOR}' (the run "
                "config carries the list as comma-separated text); rename or link the folder"
            )
        hint = "" if member_dirs else "If it is not a member, list the members in data.member_dirs"
        _check_class_folders(member, classes, "a member folder", hint)
    return MemberFolders(tuple(members), test)


def _sub_folders(root: Path, test: Path) -> list[Path]:
    if not root.is_dir():
        raise MemberFoldersError(f"data.root={root} is not a folder of member folders")
    members = sorted(
        child.resolve()
        for child in root.iterdir()
        if child.is_dir() and not child.name.startswith(".") and child.resolve() != test
    )
    if not members:
        raise MemberFoldersError(
            f"data.root={root} has no member folders (one sub-folder per member, each with "
            "one sub-folder per class)"
        )
    return members


def _check_class_folders(folder: Path, classes: Sequence[str], what: str, hint: str = "") -> None:
    if not folder.is_dir():
        raise MemberFoldersError(f"{folder}: {what} does not exist or is not a folder")
    if not any((folder / name).is_dir() for name in classes):
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())[:8]
        raise MemberFoldersError(
            f"{folder}: {what} needs one sub-folder per class, named as in data.classes "
            f"({', '.join(classes)}); it has {', '.join(found) or 'none'}. {hint}".rstrip()
        )
