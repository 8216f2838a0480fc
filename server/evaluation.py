"""The coordinator's held-out test set and the scoring of a global model on it."""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord
from torch import nn

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.cached_images import load_cached_images
from fractofl.core.images.labelled import make_loader
from fractofl.core.learning.calibration import Calibration, calibrate, collect_scores
from fractofl.core.learning.device import resolve_device
from fractofl.core.learning.member_data import cache_root_for
from fractofl.core.learning.training import EvalResult, evaluate
from fractofl.core.model.factory import preprocessing_for
from fractofl.core.synth.dataset import holdout_dir


def coordinator_test_dir(cfg: RunConfig) -> Path:
    """``data.test_dir``, or the synthetic set's test folder under ``data.root``."""
    return Path(cfg.data.test_dir) if cfg.data.test_dir else holdout_dir(Path(cfg.data.root))


class CoordinatorEvaluator:
    """Scores weights on the coordinator test set with one reusable model instance."""

    def __init__(self, cfg: RunConfig, model: nn.Module) -> None:
        preprocessing = preprocessing_for(cfg)
        self.data = load_cached_images(
            coordinator_test_dir(cfg),
            cfg.data.classes,
            preprocessing,
            cache_root_for(cfg),
            cfg.data.unknown_scale,
        )
        self.model = model
        self.num_classes = len(cfg.data.classes)
        self.batch_size = cfg.train.batch_size
        self.device = resolve_device(cfg.train.device)
        self.seed = cfg.seed
        self.ood_coverage = cfg.registry.ood_coverage

    def evaluate_state(self, state_dict: dict[str, torch.Tensor]) -> EvalResult:
        """Load ``state_dict`` into the model and evaluate it."""
        self.model.load_state_dict(state_dict)
        loader = make_loader(self.data, self.batch_size, False, None, self.seed)
        return evaluate(self.model, loader, self.num_classes, self.device)

    def evaluate_arrays(self, arrays: ArrayRecord) -> EvalResult:
        """Evaluate the weights a Flower strategy holds."""
        return self.evaluate_state(arrays.to_torch_state_dict())

    def calibration_of(self, state_dict: dict[str, torch.Tensor]) -> Calibration:
        """The temperature that calibrates ``state_dict``'s probabilities on the test set,
        and the calibration error before and after it."""
        self.model.load_state_dict(state_dict)
        loader = make_loader(self.data, self.batch_size, False, None, self.seed)
        scores, labels = collect_scores(self.model, loader, self.device)
        return calibrate(scores, labels, self.ood_coverage)
