"""A folder's labelled images, prepared once into the on-disk cache and read per batch.

The first run decodes every image and stores it at model scale (``pixel_store``); a later
run, or the next message of the same run, hashes only files whose size or modification
time changed (``file_index``) and decodes only images the cache does not hold: adding
ten images decodes ten. Memory holds the list of stored images, not their pixels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fractofl.core.images.file_index import FileIndex, FileState
from fractofl.core.images.imageio import (
    DEFAULT_MAX_PIXELS,
    UnreadableImageError,
    decode_grayscale,
)
from fractofl.core.images.labelled import NoUsableImagesError, list_labelled_files
from fractofl.core.images.physical_scale import ScaleError
from fractofl.core.images.pixel_store import PixelStore, StoredPixels
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.images.scale_policy import UNKNOWN_SCALE_POLICIES
from fractofl.core.images.sem_scale import (
    SCALE_FILE,
    TIFF_SUFFIXES,
    ScaleFileError,
    SemScale,
    companion_scale,
    tiff_tag_scale,
)
from fractofl.core.images.tiles import TileError, random_position

log = logging.getLogger("fractofl")

# An image file larger than this is not a micrograph (a 7000 x 7000 16-bit RGBA image
# uncompressed is about 400 MB): it is refused before it is read into memory.
MAX_IMAGE_FILE_BYTES = DEFAULT_MAX_PIXELS * 8
PROGRESS_SECONDS = 10.0  # how often a long preparation says how far it got


@dataclass
class CacheReport:
    """What preparing a folder took: images decoded, taken from the cache, files hashed,
    shards dropped (corrupt or foreign) and files skipped (unreadable)."""

    images: int = 0
    decoded: int = 0
    reused: int = 0
    hashed: int = 0
    dropped: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the member's log."""
        parts = [f"{self.images} images: {self.decoded} decoded, {self.reused} from the cache"]
        if self.dropped:
            parts.append(f"{len(self.dropped)} cache shard(s) dropped and rebuilt")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (unreadable or unusable; see the warnings)")
        return "; ".join(parts)


class CachedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Labelled images in the on-disk cache: ``image(i)`` reads and normalises one."""

    def __init__(
        self,
        stored: Sequence[StoredPixels],
        y: torch.Tensor,
        preprocessing: Preprocessing,
        report: CacheReport | None = None,
    ) -> None:
        self.stored = list(stored)
        self.y = y
        self.preprocessing = preprocessing
        self.report = report or CacheReport()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(index), self.y[index]

    def image(self, index: int) -> torch.Tensor:
        """The ``index``-th image as the model's evaluation input: (C, S, S), or the
        grid of tiles (T, C, S, S) for a physical-scale model."""
        return self.preprocessing.model_input(self.stored[index].read())

    def for_training(self, tiles_per_image: int) -> CachedImages | RandomTiles:
        """What training reads: the images themselves, or (physical scale)
        ``tiles_per_image`` tiles of each at random places, drawn anew every pass."""
        return RandomTiles(self, tiles_per_image) if self.preprocessing.physical else self

    def subset(self, indices: np.ndarray) -> CachedImages:
        """The examples at ``indices``."""
        chosen = [self.stored[int(i)] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.long)
        return CachedImages(chosen, self.y[index], self.preprocessing)

    def class_counts(self, num_classes: int) -> list[int]:
        """Examples per class index."""
        return torch.bincount(self.y, minlength=num_classes).tolist()

    @staticmethod
    def concat(parts: Sequence[CachedImages]) -> CachedImages:
        """Several sets of the same preprocessing as one."""
        if not parts:
            raise ValueError("nothing to put together")
        stored = [s for part in parts for s in part.stored]
        return CachedImages(stored, torch.cat([p.y for p in parts]), parts[0].preprocessing)


class RandomTiles(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Training tiles of physical-scale images: item ``k`` is a tile of image
    ``k // tiles_per_image`` at a random place (torch's generator, seeded per run); only
    the tile's rows are read from the cache."""

    def __init__(self, images: CachedImages, tiles_per_image: int) -> None:
        if tiles_per_image < 1:
            raise ValueError(f"train.tiles_per_image={tiles_per_image} must be at least 1")
        self.images = images
        self.tiles_per_image = tiles_per_image
        self.y = images.y.repeat_interleave(tiles_per_image)

    def __len__(self) -> int:
        return len(self.images) * self.tiles_per_image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(index), self.y[index]

    def image(self, index: int) -> torch.Tensor:
        """A random tile of image ``index // tiles_per_image`` (C, S, S)."""
        stored = self.images.stored[index // self.tiles_per_image]
        size = self.images.preprocessing.image_size
        top, left = random_position(stored.height, stored.width, size)
        rows = stored.read_rows(top, size)
        return self.images.preprocessing.normalise(
            np.ascontiguousarray(rows[:, left : left + size])
        )

    def subset(self, indices: np.ndarray) -> RandomTiles:
        """Tiles of the images at ``indices``."""
        return RandomTiles(self.images.subset(indices), self.tiles_per_image)

    def class_counts(self, num_classes: int) -> list[int]:
        """Tiles per class index."""
        return torch.bincount(self.y, minlength=num_classes).tolist()


def load_cached_images(
    root: Path,
    classes: Sequence[str],
    preprocessing: Preprocessing,
    cache_root: Path,
    unknown_scale: str = "skip",
) -> CachedImages:
    """Every usable image of ``root``'s class folders, prepared through the cache at
    ``cache_root``. Unreadable files and, for a physical-scale model, images of unknown
    scale (``unknown_scale``: ``skip``; ``as_is``: taken to be at the model's scale),
    with a data bar that covers them or smaller than one tile are skipped, each logged
    with the reason. ImageCacheError when the cache cannot be written;
    NoUsableImagesError when no image is usable."""
    if unknown_scale not in UNKNOWN_SCALE_POLICIES:
        raise ValueError(
            f"data.unknown_scale={unknown_scale!r}; use one of {', '.join(UNKNOWN_SCALE_POLICIES)}"
        )
    started = time.monotonic()
    files = list_labelled_files(root, classes)
    index = FileIndex(cache_root, root.resolve())
    store = PixelStore(cache_root, preprocessing.cache_key()).open()
    report = CacheReport()
    scales = _Scales(root, preprocessing, unknown_scale)

    indexed: dict[Path, FileState] = {}  # files unchanged since they were indexed
    for path, _ in files:
        try:
            state = index.known(path.relative_to(root).as_posix(), path.stat())
        except OSError:
            state = None  # gone since it was listed: reading it reports why
        if state is not None:
            indexed[path] = state
    # Stored images are checked when read (a CRC per block of rows), not here: a message
    # costs a stat per file, not a pass over the cache.
    report.dropped = list(store.dropped)

    stored: list[StoredPixels] = []  # shard paths and offsets are final once committed
    fresh: dict[str, StoredPixels] = {}
    labels: list[int] = []
    progress = _Progress(root, len(files) - len(indexed))
    with store.writer() as writer:
        for path, label in files:
            try:
                state = indexed.get(path)
                data = None
                if state is None:  # new or changed: read, hash and index it
                    data, state = _read_file(path)
                    index.record(path.relative_to(root).as_posix(), state)
                    report.hashed += 1
                scale = scales.of(path, state)
                key = scales.key(state, scale)
                same = store.entries.get(key) or fresh.get(key)
                if same is None:
                    if data is None:  # indexed, but its prepared image is not stored
                        data, state = _read_file(path)
                        key = scales.key(state, scale)
                    image = decode_grayscale(data, str(path))
                    pixels = preprocessing.prepare(image, scale, str(path))
            except (UnreadableImageError, ScaleError, ScaleFileError, TileError) as exc:
                log.warning("skipping image %s: %s", path, exc)
                report.skipped.append((path, str(exc)))
                continue
            if same is not None:  # prepared before (or a copy of one that was)
                stored.append(same)
                report.reused += 1
            else:
                fresh[key] = writer.add(key, pixels)
                stored.append(fresh[key])
                report.decoded += 1
                progress.step()
            labels.append(label)
    scales.warn_assumed()
    index.keep_only({p.relative_to(root).as_posix() for p, _ in files})
    index.save()
    report.images = len(stored)
    if not stored:
        raise NoUsableImagesError(
            f"no usable image of the classes {list(classes)} under {root}; "
            f"run `fractofl data check {root}` for a report"
        )
    log.info(
        "image cache %s: %s (%.1f s)", store.folder, report.summary(), time.monotonic() - started
    )
    return CachedImages(stored, torch.tensor(labels, dtype=torch.long), preprocessing, report)


class _Scales:
    """Each image's scale and its key in the store, for one folder and preprocessing."""

    def __init__(self, root: Path, preprocessing: Preprocessing, unknown_scale: str) -> None:
        self.root = root
        self.preprocessing = preprocessing
        self.unknown_scale = unknown_scale
        self.assumed: set[Path] = set()  # images taken to be at the model's scale

    def of(self, path: Path, state: FileState) -> SemScale | None:
        """The image's scale (None for a whole-image model, which needs none). ScaleError
        when it is unknown and the policy skips such images."""
        if not self.preprocessing.physical:
            return None
        scale = state.tag_scale or companion_scale(path, self.root)
        if scale.pixel_size_um is not None:
            return scale
        if self.unknown_scale == "as_is":
            self.assumed.add(path)
            return replace(scale, pixel_size_um=self.preprocessing.pixel_size_um)
        why = scale.source or "no metadata, sidecar or scale.yaml gives it"
        raise ScaleError(
            f"no known pixel size ({why}); put a {SCALE_FILE} with pixel_size_um in its "
            "folder, or set data.unknown_scale=as_is"
        )

    def key(self, state: FileState, scale: SemScale | None) -> str:
        """The image's key in the store: its content hash and, at physical scale, the
        scale it is prepared from (a changed scale.yaml prepares it again)."""
        if scale is None:
            return state.sha256
        described = f"{state.sha256}|{scale.pixel_size_um!r}|{scale.databar_px!r}"
        return hashlib.sha256(described.encode()).hexdigest()

    def warn_assumed(self) -> None:
        """One warning for the images taken to be at the model's scale."""
        if self.assumed:
            names = ", ".join(sorted(p.name for p in self.assumed)[:5])
            log.warning(
                "%d image(s) of %s have no known pixel size and were taken to be at the "
                "model's %g um per pixel (data.unknown_scale=as_is): %s%s",
                len(self.assumed),
                self.root,
                self.preprocessing.pixel_size_um,
                names,
                ", ..." if len(self.assumed) > 5 else "",
            )


def _read_file(path: Path) -> tuple[bytes, FileState]:
    """The file's bytes (bounded) and its state; UnreadableImageError naming the cause."""
    try:
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size > MAX_IMAGE_FILE_BYTES:
                raise UnreadableImageError(
                    path,
                    f"file is {stat.st_size / 2**20:.0f} MiB, above the "
                    f"{MAX_IMAGE_FILE_BYTES / 2**20:.0f} MiB an image may take",
                )
            data = handle.read(MAX_IMAGE_FILE_BYTES + 1)
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise UnreadableImageError(path, "file is empty (0 bytes); re-export or remove it")
    tags = tiff_tag_scale(io.BytesIO(data)) if path.suffix.lower() in TIFF_SUFFIXES else None
    return data, FileState.of(stat, hashlib.sha256(data).hexdigest(), tags)


class _Progress:
    """Logs how far a long preparation got, every PROGRESS_SECONDS."""

    def __init__(self, root: Path, todo: int) -> None:
        self.root, self.todo, self.done = root, todo, 0
        self.last = time.monotonic()

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            log.info(
                "image cache: decoded %d of about %d images of %s", self.done, self.todo, self.root
            )
            self.last = now
