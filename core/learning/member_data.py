"""A member's images, prepared through the on-disk cache once per process and split into
training and validation."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.cached_images import CachedImages, load_cached_images
from fractofl.core.images.labelled import folder_identity, split_train_val
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.model.factory import preprocessing_for

CACHE_SUBFOLDER = "fractofl"


@dataclass(frozen=True)
class MemberData:
    """A member's images, split once into local training and validation parts, and the
    folder's identity (by content: the same in a simulation and in a deployment)."""

    train: CachedImages
    val: CachedImages
    identity: int = 0


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
) -> MemberData:
    data = load_cached_images(data_dir, classes, preprocessing, cache_root, unknown_scale)
    train_idx, val_idx = split_train_val(len(data), val_fraction, seed)
    identity = folder_identity(data_dir, classes)
    return MemberData(train=data.subset(train_idx), val=data.subset(val_idx), identity=identity)


def load_member_data(data_dir: Path, cfg: RunConfig, cache_root: Path | None = None) -> MemberData:
    """A member's images, prepared once per process through the cache at ``cache_root``
    (default: :func:`cache_root_for`); members train on them every round."""
    return _load(
        data_dir.resolve(),
        tuple(cfg.data.classes),
        preprocessing_for(cfg),
        cfg.data.val_fraction,
        cfg.seed,
        (cache_root or cache_root_for(cfg)).resolve(),
        cfg.data.unknown_scale,
    )
