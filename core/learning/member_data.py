"""A member's images, decoded once per process and split into training and validation."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.labelled import (
    LabelledTensors,
    folder_identity,
    load_labelled_tensors,
    split_train_val,
)
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.model.factory import preprocessing_for


@dataclass(frozen=True)
class MemberData:
    """A member's images, split once into local training and validation parts, and the
    folder's identity (by content: the same in a simulation and in a deployment)."""

    train: LabelledTensors
    val: LabelledTensors
    identity: int = 0


@functools.lru_cache(maxsize=64)
def _load(
    data_dir: Path,
    classes: tuple[str, ...],
    preprocessing: Preprocessing,
    val_fraction: float,
    seed: int,
) -> MemberData:
    data = load_labelled_tensors(data_dir, classes, preprocessing)
    train_idx, val_idx = split_train_val(len(data), val_fraction, seed)
    identity = folder_identity(data_dir, classes)
    return MemberData(train=data.subset(train_idx), val=data.subset(val_idx), identity=identity)


def load_member_data(data_dir: Path, cfg: RunConfig) -> MemberData:
    """Decode a member's images once per process: members train on them every round."""
    return _load(
        data_dir.resolve(),
        tuple(cfg.data.classes),
        preprocessing_for(cfg),
        cfg.data.val_fraction,
        cfg.seed,
    )
