"""A member's labelled images (one sub-folder per class): listing them, splitting them,
and loading them for training, from memory or from the on-disk cache
(``cached_images``), through one interface.

Unreadable files are skipped with a warning that names them: one bad file never stops
training.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fractofl.core.images.augmentation import Augmentation
from fractofl.core.images.imageio import (
    IMAGE_SUFFIXES,
    UnreadableImageError,
    read_grayscale,
    walk_image_tree,
)
from fractofl.core.images.preprocessing import Preprocessing

log = logging.getLogger("fractofl")

IDENTITY_MODULUS = 2**31  # a member's identity feeds torch and numpy seeds


class NoUsableImagesError(ValueError):
    """A data folder holds no readable image of any configured class."""


class LabelledImages(Protocol):
    """Labelled images read one at a time: in memory (:class:`LabelledTensors`) or in
    the on-disk cache (``cached_images.CachedImages``)."""

    y: torch.Tensor

    def __len__(self) -> int: ...

    def image(self, index: int) -> torch.Tensor:
        """The ``index``-th image as the model's input (C, S, S)."""
        ...

    def subset(self, indices: np.ndarray) -> LabelledImages:
        """The examples at ``indices``."""
        ...

    def class_counts(self, num_classes: int) -> list[int]:
        """Examples per class index."""
        ...


@dataclass
class LabelledTensors:
    """Preprocessed images ``x`` (N, C, S, S) with integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def image(self, index: int) -> torch.Tensor:
        """The ``index``-th image."""
        return self.x[index]

    def subset(self, indices: np.ndarray) -> LabelledTensors:
        """The examples at ``indices``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return LabelledTensors(self.x[index], self.y[index])

    def class_counts(self, num_classes: int) -> list[int]:
        """Examples per class index."""
        return torch.bincount(self.y, minlength=num_classes).tolist()


def list_labelled_files(root: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """Image files under ``root/<class>/`` (recursively, hidden ones left out) for the
    configured classes, in a stable order.

    Folders of unknown classes are ignored (``fractofl data check`` reports them).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist or is not a directory")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        if folder.is_dir():
            files += [
                (path, label)
                for path in walk_image_tree(folder)
                if path.suffix.lower() in IMAGE_SUFFIXES
            ]
    return files


def folder_identity(root: Path, classes: Sequence[str]) -> int:
    """A number (31 bits) that names an image folder by what it holds: the class, relative
    path and size of every image of ``classes``. The same folder gives the same number
    wherever it is mounted, in a simulation or on a real member's machine."""
    digest = hashlib.sha256()
    for path, label in list_labelled_files(root, classes):
        relative = path.relative_to(root).as_posix()
        digest.update(f"{label}\0{relative}\0{path.stat().st_size}\n".encode())
    return int.from_bytes(digest.digest()[:8], "big") % IDENTITY_MODULUS


def load_labelled_tensors(
    root: Path, classes: Sequence[str], preprocessing: Preprocessing
) -> LabelledTensors:
    """Decode and preprocess every readable image of ``root`` into memory; skip and log
    the others (members and the coordinator read through the on-disk cache instead)."""
    images: list[torch.Tensor] = []
    labels: list[int] = []
    skipped: list[tuple[Path, str]] = []
    for path, label in list_labelled_files(root, classes):
        try:
            pixels = read_grayscale(path)
        except UnreadableImageError as exc:
            log.warning("skipping unreadable image %s: %s", path, exc)
            skipped.append((path, str(exc)))
            continue
        images.append(preprocessing.to_tensor(pixels))
        labels.append(label)
    if not images:
        raise NoUsableImagesError(
            f"no readable image of the classes {list(classes)} under {root}; "
            f"run `fractofl data check {root}` for a report"
        )
    return LabelledTensors(torch.stack(images), torch.tensor(labels, dtype=torch.long), skipped)


def split_train_val(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled split of ``range(count)``; validation gets at least one
    example whenever ``val_fraction > 0`` and ``count >= 2``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={val_fraction} must be in [0, 1)")
    order = np.random.default_rng(seed).permutation(count)
    n_val = round(count * val_fraction)
    if val_fraction > 0 and count >= 2:
        n_val = max(n_val, 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class AugmentedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Labelled images, each passed through ``augmentation`` when it is read."""

    def __init__(self, data: LabelledImages, augmentation: Augmentation | None) -> None:
        self.data = data
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.data.image(index)
        if self.augmentation is not None:
            # torch's global generator is seeded per run, so this stays reproducible.
            image = self.augmentation(image)
        return image, self.data.y[index]


def make_loader(
    data: LabelledImages,
    batch_size: int,
    shuffle: bool,
    augmentation: Augmentation | None,
    seed: int,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """A single-process loader over labelled images (``augmentation``: training only)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        AugmentedImages(data, augmentation),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
    )
