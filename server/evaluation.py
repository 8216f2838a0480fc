"""The coordinator's held-out test set and the scoring of a global model on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from torch import nn

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.cached_images import load_cached_images
from fractofl.core.images.labelled import make_loader
from fractofl.core.learning.calibration import Calibration, calibrate
from fractofl.core.learning.device import resolve_device
from fractofl.core.learning.member_data import cache_root_for
from fractofl.core.learning.training import (
    EvalResult,
    ScoredExamples,
    eval_result,
    score_examples,
)
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
        self._last: tuple[str, ScoredExamples] | None = None
        self.passes = 0
        """Passes over the test set so far (one per distinct weights scored in a row)."""

    def scored(self, state_dict: dict[str, torch.Tensor]) -> ScoredExamples:
        """One pass of ``state_dict`` over the test set. The last pass is kept: a round's
        evaluation and the calibration of the version it publishes score the same
        weights, and the test set is read once per weights, not twice."""
        digest = weights_digest(state_dict)
        if self._last is None or self._last[0] != digest:
            self.model.load_state_dict(state_dict)
            loader = make_loader(self.data, self.batch_size, False, None, self.seed)
            self._last = digest, score_examples(self.model, loader, self.device)
            self.passes += 1
        return self._last[1]

    def evaluate_state(self, state_dict: dict[str, torch.Tensor]) -> EvalResult:
        """Loss, accuracy, macro-F1 and confusion matrix of ``state_dict``."""
        return eval_result(self.scored(state_dict), self.num_classes)

    def evaluate_arrays(self, arrays: ArrayRecord) -> EvalResult:
        """Evaluate the weights a Flower strategy holds."""
        return self.evaluate_state(arrays.to_torch_state_dict())

    def calibration_of(self, state_dict: dict[str, torch.Tensor]) -> Calibration:
        """The temperature that calibrates ``state_dict``'s probabilities on the test set,
        and the calibration error before and after it."""
        scored = self.scored(state_dict)
        return calibrate(scored.scores, scored.labels, self.ood_coverage)


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and values: equal for equal weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
