"""A member's images, prepared through the on-disk cache once per process and split into
training and validation; a consortium reference set, when the member has one, joins the
training split."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.cached_images import CachedImages, load_cached_images
from fractofl.core.images.labelled import folder_identity, split_train_val
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.model.factory import preprocessing_for

CACHE_SUBFOLDER = "fractofl"


@dataclass(frozen=True)
class MemberData:
    """A member's images, split once into local training and validation parts, and the
    folder's identity (by content: the same in a simulation and in a deployment). With a
    reference set, ``train`` ends with all of its images (``reference_images`` of them);
    ``val`` holds the member's own images only."""

    train: CachedImages
    val: CachedImages
    identity: int = 0
    reference_images: int = 0
    reference_identity: int = 0
    """The reference set's :func:`folder_identity` (0: none)."""

    def own_class_counts(self, num_classes: int) -> list[int]:
        """Training images per class of the member's own images, the reference set left
        out: the class mix the member serves, which personalization adapts to."""
        own = self.train.y[: len(self.train) - self.reference_images]
        return torch.bincount(own, minlength=num_classes).tolist()


class ReferenceSetMissingError(FileNotFoundError):
    """The reference set's folder is not there."""


def default_cache_root() -> Path:
    """The user's cache folder for prepared images: ``$XDG_CACHE_HOME/fractofl``, else
    ``~/.cache/fractofl``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / CACHE_SUBFOLDER


def cache_root_for(cfg: RunConfig) -> Path:
    """``data.cache_dir``, or the user's cache folder when it is empty."""
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_root()


@functools.lru_cache(maxsize=64)
def _load(
    data_dir: Path,
    classes: tuple[str, ...],
    preprocessing: Preprocessing,
    val_fraction: float,
    seed: int,
    cache_root: Path,
    unknown_scale: str,
    reference_dir: Path | None,
) -> MemberData:
    data = load_cached_images(data_dir, classes, preprocessing, cache_root, unknown_scale)
    train_idx, val_idx = split_train_val(len(data), val_fraction, seed)
    identity = folder_identity(data_dir, classes)
    train = data.subset(train_idx)
    if reference_dir is None:
        return MemberData(train=train, val=data.subset(val_idx), identity=identity)
    reference = load_reference_set(reference_dir, classes, preprocessing, cache_root, unknown_scale)
    return MemberData(
        train=CachedImages.concat([train, reference]),
        val=data.subset(val_idx),
        identity=identity,
        reference_images=len(reference),
        reference_identity=folder_identity(reference_dir, classes),
    )


def reference_dir(cfg: RunConfig) -> Path | None:
    """``data.reference_dir`` as a path, or None when the run has no reference set."""
    return Path(cfg.data.reference_dir).expanduser() if cfg.data.reference_dir else None


def load_reference_set(
    reference_dir: Path,
    classes: tuple[str, ...],
    preprocessing: Preprocessing,
    cache_root: Path,
    unknown_scale: str,
) -> CachedImages:
    """Every image of the reference set, prepared through the cache like a member's own;
    ReferenceSetMissingError naming the folder when it is not there."""
    if not reference_dir.is_dir():
        raise ReferenceSetMissingError(
            f"reference set {reference_dir} (data.reference_dir, or the member's "
            "`member join --reference`) is not a folder on this machine: copy the "
            "consortium's reference set there, or leave the setting empty to train without one"
        )
    return load_cached_images(reference_dir, classes, preprocessing, cache_root, unknown_scale)


def run_reference_set(cfg: RunConfig) -> CachedImages | None:
    """The run's reference set (``data.reference_dir``) prepared through the run's cache,
    as every simulated member reads it, or None when the run has none."""
    folder = reference_dir(cfg)
    if folder is None:
        return None
    return load_reference_set(
        folder.resolve(),
        tuple(cfg.data.classes),
        preprocessing_for(cfg),
        cache_root_for(cfg).resolve(),
        cfg.data.unknown_scale,
    )


def load_member_data(
    data_dir: Path,
    cfg: RunConfig,
    cache_root: Path | None = None,
    reference_dir: Path | None = None,
) -> MemberData:
    """A member's images, prepared once per process through the cache at ``cache_root``
    (default: :func:`cache_root_for`); members train on them every round, together with
    the reference set at ``reference_dir`` when there is one."""
    return _load(
        data_dir.resolve(),
        tuple(cfg.data.classes),
        preprocessing_for(cfg),
        cfg.data.val_fraction,
        cfg.seed,
        (cache_root or cache_root_for(cfg)).resolve(),
        cfg.data.unknown_scale,
        None if reference_dir is None else reference_dir.expanduser().resolve(),
    )
