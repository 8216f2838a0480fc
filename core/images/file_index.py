"""What a member's image files hold, remembered between runs: each file's size,
modification time and content hash, so a later run hashes only the files that changed.

One index per image folder lives in the cache (``<cache>/index/<folder digest>.json``),
never in the image folder, which fractofl only reads. A missing, unreadable or foreign
index is treated as empty: every file is hashed again, nothing else is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fractofl.core.files.atomic import atomic_write_bytes
from fractofl.core.images.scale import SemScale

log = logging.getLogger("fractofl")

INDEX_FORMAT = 1
INDEX_FOLDER = "index"


@dataclass(frozen=True)
class FileState:
    """What identifies a file's content without reading it (size and modification time
    in nanoseconds), the content's SHA-256 when it was read at that state, and the scale
    its own TIFF tags give (None: none, or not a TIFF)."""

    size: int
    mtime_ns: int
    sha256: str
    tag_scale: SemScale | None = None

    @staticmethod
    def of(stat: os.stat_result, sha256: str, tag_scale: SemScale | None) -> FileState:
        """The state of a file as ``stat`` saw it, with its content hash and tag scale."""
        return FileState(stat.st_size, stat.st_mtime_ns, sha256, tag_scale)

    def to_json(self) -> list[Any]:
        """Compact form for the index file."""
        scale = self.tag_scale
        tags = (
            None
            if scale is None
            else [scale.pixel_size_um, scale.magnification, scale.databar_px, scale.source]
        )
        return [self.size, self.mtime_ns, self.sha256, tags]

    @staticmethod
    def from_json(values: list[Any]) -> FileState:
        """Inverse of :meth:`to_json` (ValueError/TypeError when malformed)."""
        size, mtime, sha, tags = values
        scale = None
        if tags is not None:
            pixel, magnification, databar, source = tags
            scale = SemScale(
                None if pixel is None else float(pixel),
                None if magnification is None else float(magnification),
                None if databar is None else int(databar),
                str(source),
            )
        return FileState(int(size), int(mtime), str(sha), scale)


class FileIndex:
    """The content hashes of one folder's files, keyed by path relative to the folder."""

    def __init__(self, cache_root: Path, folder: Path) -> None:
        self.folder = folder
        key = hashlib.sha256(str(folder).encode()).hexdigest()[:24]
        self.path = cache_root / INDEX_FOLDER / f"{key}.json"
        self.entries: dict[str, FileState] = self._read()
        self._changed = False

    def known(self, relative: str, stat: os.stat_result) -> FileState | None:
        """The file's indexed state when it is unchanged since it was indexed, else None."""
        entry = self.entries.get(relative)
        if entry is None or (entry.size, entry.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            return None
        return entry

    def record(self, relative: str, state: FileState) -> None:
        """Remember a file's state and content hash."""
        if self.entries.get(relative) != state:
            self.entries[relative] = state
            self._changed = True

    def keep_only(self, relatives: set[str]) -> None:
        """Forget files that are no longer in the folder."""
        gone = set(self.entries) - relatives
        for relative in gone:
            del self.entries[relative]
        self._changed = self._changed or bool(gone)

    def save(self) -> None:
        """Write the index when it changed (atomically: a reader sees old or new)."""
        if not self._changed:
            return
        document = {
            "format": INDEX_FORMAT,
            "folder": str(self.folder),
            "files": {name: e.to_json() for name, e in sorted(self.entries.items())},
        }
        atomic_write_bytes(self.path, json.dumps(document).encode())
        self._changed = False

    def _read(self) -> dict[str, FileState]:
        try:
            document = json.loads(self.path.read_text())
            if document.get("format") != INDEX_FORMAT or document.get("folder") != str(self.folder):
                raise ValueError("another format or folder")
            return {name: FileState.from_json(v) for name, v in document["files"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning(
                "image cache: index %s unusable (%s); hashing every file again", self.path, exc
            )
            return {}
