"""The coordinator's test set is read once per global model: a round's evaluation and the
calibration of the version it publishes share one pass (``server/evaluation.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.labelled import make_loader
from fractofl.core.learning.calibration import calibrate
from fractofl.core.model.factory import model_for
from fractofl.server.evaluation import CoordinatorEvaluator, weights_digest


def _config(easy_dataset: Path, cache: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.data.root = str(easy_dataset)
    cfg.data.cache_dir = str(cache)
    cfg.model.image_size = 32
    return cfg


def _weights(cfg: RunConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return model_for(cfg).state_dict()


@pytest.fixture()
def cfg(easy_dataset: Path, tmp_path: Path) -> RunConfig:
    return _config(easy_dataset, tmp_path / "cache")


def test_evaluation_and_calibration_of_one_model_read_the_test_set_once(cfg: RunConfig) -> None:
    weights = _weights(cfg, seed=1)
    shared = CoordinatorEvaluator(cfg, model_for(cfg))
    result = shared.evaluate_state(weights)
    calibration = shared.calibration_of(dict(weights))  # a copy: equal weights, not the object
    assert shared.passes == 1

    # each on an evaluator of its own gives the same figures
    alone = CoordinatorEvaluator(cfg, model_for(cfg))
    assert alone.calibration_of(weights) == calibration
    other = CoordinatorEvaluator(cfg, model_for(cfg))
    separate = other.evaluate_state(weights)
    assert (separate.loss, separate.accuracy, separate.macro_f1) == (
        result.loss,
        result.accuracy,
        result.macro_f1,
    )
    assert (separate.confusion == result.confusion).all()

    # and the figures are those of the network's own logits over the whole test set
    model = model_for(cfg)
    model.load_state_dict(weights)
    model.eval()
    loader = make_loader(shared.data, shared.batch_size, False, None, shared.seed)
    with torch.no_grad():
        batches = [(model(images), labels) for images, labels in loader]
    logits = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert result.examples == len(labels) == len(shared.data)
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert calibration == calibrate(logits, labels, cfg.registry.ood_coverage)


def test_other_weights_are_scored_again(cfg: RunConfig) -> None:
    first, second = _weights(cfg, seed=1), _weights(cfg, seed=2)
    evaluator = CoordinatorEvaluator(cfg, model_for(cfg))
    a = evaluator.evaluate_state(first)
    b = evaluator.evaluate_state(second)
    assert evaluator.passes == 2
    assert a.loss != b.loss
    # only the last weights are kept: the first ones are scored again, to the same figures
    assert evaluator.evaluate_state(first).loss == a.loss
    assert evaluator.passes == 3


def test_the_digest_tells_weights_apart_by_value_name_and_type() -> None:
    weights = {"a.weight": torch.ones(2, 3), "a.count": torch.tensor(4)}
    same = {name: tensor.clone() for name, tensor in weights.items()}
    assert weights_digest(same) == weights_digest(weights)
    changed = dict(weights, **{"a.weight": torch.ones(2, 3).index_fill(1, torch.tensor([2]), 2)})
    renamed = {"b.weight": weights["a.weight"], "a.count": weights["a.count"]}
    retyped = dict(weights, **{"a.weight": torch.ones(2, 3, dtype=torch.float64)})
    reshaped = dict(weights, **{"a.weight": torch.ones(3, 2)})
    digests = {weights_digest(w) for w in (weights, changed, renamed, retyped, reshaped)}
    assert len(digests) == 5
