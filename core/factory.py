"""Objects built from a run config, shared by members, coordinator and baseline."""

from __future__ import annotations

from torch import nn

from fractofl.core.models import build_model, default_preprocessing
from fractofl.core.preprocessing import Preprocessing
from fractofl.core.run_config import RunConfig


def model_for(cfg: RunConfig) -> nn.Module:
    """The configured architecture with fresh weights (grayscale input)."""
    return build_model(cfg.model.name, num_classes=len(cfg.data.classes), **cfg.model.args)


def preprocessing_for(cfg: RunConfig) -> Preprocessing:
    """The preprocessing of the configured model."""
    return default_preprocessing(cfg.model.name, cfg.model.image_size)
