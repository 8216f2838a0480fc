"""Preprocessed images on disk, keyed by the source file's content and the preprocessing.

A member decodes each of its images once, not once per message and run: the pixels at
model scale go into append-only shard files (``<id>.bin``, float32, little-endian), each
described by a manifest (``<id>.json``: per image the source's SHA-256, offset, shape and
a CRC-32 per BLOCK_ROWS rows) that is written last, atomically. One folder per preprocessing
(``<cache>/pixels/<key digest>/``), so images prepared another way are never mixed in.

Readers use ``pread`` on the shard, not a memory map: resident memory stays at a batch,
the kernel's page cache does the rest. Nothing is trusted blindly: a manifest of another
format or preprocessing, or a shard shorter than its manifest says, drops that shard when
the store is opened; rows whose CRC does not match drop it when they are read. Either
way a warning names it and its images are prepared again.
Shards are immutable and named uniquely, so processes preparing the same images at the
same time need no lock (the worst case is an image stored twice).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fractofl.core.files.atomic import atomic_write_bytes, fsync_dir

log = logging.getLogger("fractofl")

STORE_FORMAT = 1
PIXELS_FOLDER = "pixels"
PIXEL_DTYPE = np.dtype("<f4")
CACHE_MODE = 0o700
BLOCK_ROWS = 64  # rows per CRC: a tile's read checks at most two blocks per tile row span
SHARD_SUFFIX = ".bin"
MANIFEST_SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
# A shard is committed when it reaches either bound, so a long first preparation that is
# interrupted keeps what it finished.
SHARD_MAX_BYTES = 256 << 20
SHARD_MAX_IMAGES = 256


class ImageCacheError(RuntimeError):
    """The image cache cannot be written (full disk, no permission); the images
    themselves are untouched."""


class CorruptCacheError(ImageCacheError):
    """A stored image does not match its CRC; its shard was dropped and is prepared again
    by the next preparation (the message says so)."""


@dataclass(frozen=True)
class StoredPixels:
    """One preprocessed image in a shard, with a CRC-32 per block of BLOCK_ROWS rows:
    every read checks the blocks it reads, so a damaged cache is never used silently
    and checking costs no extra pass over the cache."""

    shard: Path
    offset: int
    height: int
    width: int
    crcs: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes the image takes in its shard."""
        return self.height * self.width * PIXEL_DTYPE.itemsize

    def read(self) -> np.ndarray:
        """The pixels, float32 (height, width)."""
        return self.read_rows(0, self.height)

    def read_rows(self, top: int, count: int) -> np.ndarray:
        """Rows ``top`` to ``top + count`` (a tile's rows: memory stays at a tile); the
        blocks they lie in are read and checked. CorruptCacheError when one fails."""
        first, last = top // BLOCK_ROWS, (top + count - 1) // BLOCK_ROWS
        start, stop = first * BLOCK_ROWS, min(self.height, (last + 1) * BLOCK_ROWS)
        row = self.width * PIXEL_DTYPE.itemsize
        data = self._read(start * row, (stop - start) * row)
        for block in range(first, last + 1):
            lo = (block * BLOCK_ROWS - start) * row
            hi = (min(self.height, (block + 1) * BLOCK_ROWS) - start) * row
            if zlib.crc32(data[lo:hi]) != self.crcs[block]:
                drop_shard(self.shard, f"rows {block * BLOCK_ROWS}+ of an image fail their CRC")
                raise CorruptCacheError(
                    f"the image cache shard {self.shard} is damaged (an image's rows "
                    f"{block * BLOCK_ROWS}-{block * BLOCK_ROWS + BLOCK_ROWS - 1} fail their "
                    "CRC); it was dropped and its images are prepared again the next time"
                )
        values = np.frombuffer(data, dtype=PIXEL_DTYPE).reshape(stop - start, self.width)
        return values[top - start : top - start + count].astype(np.float32, copy=False)

    def _read(self, start: int, count: int) -> bytearray:
        # A bytearray, so the pixels are a writable array (torch warns on read-only ones).
        data = bytearray(count)
        try:
            with self.shard.open("rb") as handle:
                read = os.preadv(handle.fileno(), [data], self.offset + start)
        except OSError as exc:
            raise CorruptCacheError(
                f"the image cache shard {self.shard} cannot be read ({exc.strerror or exc}); "
                "its images are prepared again the next time"
            ) from exc
        if read != count:
            drop_shard(self.shard, "shorter than its manifest says")
            raise CorruptCacheError(
                f"the image cache shard {self.shard} is truncated; it was dropped and its "
                "images are prepared again the next time"
            )
        return data


def block_crcs(data: bytes, width: int) -> tuple[int, ...]:
    """The CRC-32 of every BLOCK_ROWS rows of an image of ``width`` float32 pixels."""
    block = BLOCK_ROWS * width * PIXEL_DTYPE.itemsize
    return tuple(zlib.crc32(data[i : i + block]) for i in range(0, len(data), block))


def drop_shard(shard: Path, reason: str) -> None:
    """Delete a shard and its manifest (another process may have done so already)."""
    log.warning("image cache: dropping %s: %s; its images are prepared again", shard, reason)
    for path in (shard.with_suffix(MANIFEST_SUFFIX), shard):
        path.unlink(missing_ok=True)


def store_folder(cache_root: Path, key: dict[str, Any]) -> Path:
    """The folder of the images prepared with preprocessing ``key``."""
    canonical = json.dumps({"format": STORE_FORMAT, **key}, sort_keys=True)
    return cache_root / PIXELS_FOLDER / hashlib.sha256(canonical.encode()).hexdigest()[:24]


class PixelStore:
    """The stored images of one preprocessing, by the SHA-256 of their source file."""

    def __init__(self, cache_root: Path, key: dict[str, Any]) -> None:
        self.key = key
        self.cache_root = cache_root
        self.folder = store_folder(cache_root, key)
        self.entries: dict[str, StoredPixels] = {}
        self.dropped: list[str] = []  # why shards were dropped, for the report

    def open(self) -> PixelStore:
        """Read every shard's manifest; drop (and delete) shards that cannot be used."""
        try:
            # Prepared images are the member's images: owner-only, like the member folder.
            self.cache_root.mkdir(mode=CACHE_MODE, parents=True, exist_ok=True)
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cache_error(self.folder, exc) from exc
        _remove_abandoned(self.folder)
        for manifest in sorted(self.folder.glob(f"*{MANIFEST_SUFFIX}")):
            problem = self._load_manifest(manifest)
            if problem:
                self.drop(manifest.with_suffix(SHARD_SUFFIX), problem)
        return self

    def drop(self, shard: Path, reason: str) -> None:
        """Forget and delete ``shard`` (its images will be prepared again)."""
        drop_shard(shard, reason)
        self.dropped.append(f"{shard.name}: {reason}")
        self.entries = {k: v for k, v in self.entries.items() if v.shard != shard}

    @contextlib.contextmanager
    def writer(self) -> Iterator[ShardWriter]:
        """A writer of new images; what it committed stays even when the block fails."""
        writer = ShardWriter(self)
        try:
            yield writer
            writer.commit()
        finally:
            writer.discard()

    def _load_manifest(self, manifest: Path) -> str:
        """Add a manifest's images; the reason it cannot be used, or '' when it can."""
        try:
            document = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable manifest ({exc})"
        if not isinstance(document, dict) or document.get("format") != STORE_FORMAT:
            return "written by another version of fractofl"
        if document.get("preprocessing") != self.key:
            return f"written for another preprocessing ({document.get('preprocessing')})"
        shard = manifest.with_suffix(SHARD_SUFFIX)
        try:
            size = shard.stat().st_size
        except OSError:
            return "its shard file is missing"
        if size != document.get("bytes"):
            return f"the shard has {size} bytes, its manifest says {document.get('bytes')}"
        try:
            found = {
                str(e["content"]): StoredPixels(
                    shard,
                    int(e["offset"]),
                    int(e["height"]),
                    int(e["width"]),
                    tuple(int(c) for c in e["crcs"]),
                )
                for e in document["images"]
            }
        except (KeyError, TypeError, ValueError) as exc:
            return f"malformed manifest ({exc!r})"
        for stored in found.values():
            blocks = -(-stored.height // BLOCK_ROWS)
            if len(stored.crcs) != blocks or stored.offset + stored.nbytes > size:
                return f"malformed manifest (an image at byte {stored.offset} does not fit)"
        for content, stored in found.items():
            self.entries.setdefault(content, stored)
        return ""


class ShardWriter:
    """Appends prepared images to a new shard and commits it in bounded pieces."""

    def __init__(self, store: PixelStore) -> None:
        self.store = store
        self.handle: BinaryIO | None = None
        self.tmp: Path | None = None
        self.images: list[tuple[str, StoredPixels]] = []
        self.size = 0
        self.shard = store.folder / "pending"

    def add(self, content: str, pixels: np.ndarray) -> StoredPixels:
        """Store ``pixels`` (2-D) as the image of the source with SHA-256 ``content``."""
        data = np.ascontiguousarray(pixels, dtype=PIXEL_DTYPE).tobytes()
        height, width = pixels.shape
        try:
            if self.handle is None:
                self._start()
            assert self.handle is not None
            self.handle.write(data)
        except OSError as exc:
            raise _cache_error(self.store.folder, exc) from exc
        stored = StoredPixels(self.shard, self.size, height, width, block_crcs(data, width))
        self.images.append((content, stored))
        self.size += len(data)
        if self.size >= SHARD_MAX_BYTES or len(self.images) >= SHARD_MAX_IMAGES:
            self.commit()
        return stored

    def commit(self) -> None:
        """Make the images added so far durable and visible to every reader."""
        if self.handle is None or self.tmp is None:
            return
        manifest = {
            "format": STORE_FORMAT,
            "preprocessing": self.store.key,
            "bytes": self.size,
            "images": [
                {
                    "content": c,
                    "offset": s.offset,
                    "height": s.height,
                    "width": s.width,
                    "crcs": list(s.crcs),
                }
                for c, s in self.images
            ],
        }
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            self.handle = None
            os.replace(self.tmp, self.shard)
            self.tmp = None
            atomic_write_bytes(
                self.shard.with_suffix(MANIFEST_SUFFIX), json.dumps(manifest).encode()
            )
        except OSError as exc:
            self.shard.unlink(missing_ok=True)
            raise _cache_error(self.store.folder, exc) from exc
        fsync_dir(self.store.folder)
        for content, stored in self.images:
            self.store.entries.setdefault(content, stored)
        self.images, self.size = [], 0

    def discard(self) -> None:
        """Remove an uncommitted shard (after a failure)."""
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self.handle = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
        self.images, self.size = [], 0

    def _start(self) -> None:
        name = uuid.uuid4().hex
        self.shard = self.store.folder / f"{name}{SHARD_SUFFIX}"
        fd, tmp = tempfile.mkstemp(
            prefix=f".{name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=self.store.folder
        )
        self.tmp = Path(tmp)
        self.handle = os.fdopen(fd, "wb")


def _remove_abandoned(folder: Path) -> None:
    """Delete the temporary files (shards, manifests) of writers that died. Each is named
    ``.<target>.<pid>.<random>.tmp``; one whose writer is alive, or whose name says no
    writer, is left: other processes (members, `member baseline`) share the folder, and
    deleting a live writer's file fails its commit."""
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        parts = tmp.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 5 and parts[-3].isdigit() else None
        if pid is not None and not _alive(pid):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cache_error(folder: Path, exc: OSError) -> ImageCacheError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        what = f"the disk is full or the file too large ({free})"
    else:
        what = f"{exc.strerror or exc}"
    return ImageCacheError(
        f"cannot write the image cache in {folder}: {what}. Your images are untouched; free "
        "space there or point the cache at a larger disk (data.cache_dir; a member's cache "
        "is deployment.member_dir/cache, which may be a link to another disk)",
    )
