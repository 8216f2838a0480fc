"""Objects built from a run config, shared by members, coordinator and baseline."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.augmentation import Augmentation, parse_augmentation
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.model.checkpoint import Checkpoint


def model_for(cfg: RunConfig) -> nn.Module:
    """The configured architecture with fresh weights (grayscale input)."""
    return build_model(cfg.model.name, num_classes=len(cfg.data.classes), **cfg.model.args)


def preprocessing_for(cfg: RunConfig) -> Preprocessing:
    """The preprocessing of the configured model, with the augmentation it trains with."""
    preprocessing = default_preprocessing(cfg.model.name, cfg.model.image_size)
    return replace(
        preprocessing,
        augmentation=parse_augmentation(cfg.train.augment),
        pixel_size_um=cfg.model.pixel_size_um,
        tile_grid=cfg.model.tile_grid,
    )


def augmentation_for(cfg: RunConfig) -> Augmentation | None:
    """The training augmentation of ``train.augment`` (None for ``none``)."""
    preprocessing = preprocessing_for(cfg)
    if not preprocessing.augmentation:
        return None
    return Augmentation(preprocessing.augmentation, pixel_std=preprocessing.std)


def checkpoint_for(
    cfg: RunConfig,
    state_dict: dict[str, torch.Tensor],
    round: int,
    run_id: str,
    metrics: dict[str, float],
) -> Checkpoint:
    """The self-describing checkpoint of weights trained under ``cfg``."""
    return Checkpoint(
        architecture=cfg.model.name,
        arch_args=dict(cfg.model.args),
        classes=list(cfg.data.classes),
        preprocessing=preprocessing_for(cfg),
        state_dict=state_dict,
        round=round,
        run_id=run_id,
        metrics=metrics,
    )
