"""A member's side of SCAFFOLD through the ClientApp's own training path: its first round
trains uncorrected and keeps its control variate and the global model it got; the next
round's correction comes from the federation's move; a member that missed a round trains
uncorrected again. Also: a member's evaluation keeps to ``train.threads``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from fractofl.client.app import _local_update
from fractofl.client.member import evaluate_locally, state_as_numpy
from fractofl.client.scaffold import CONTROL_RECORD, RECEIVED_RECORD, gradient_correction
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.control_variates import sgd_step_sum
from fractofl.core.learning.member_data import MemberData, load_member_data
from fractofl.core.model.factory import model_for
from fractofl.core.synth.dataset import member_dir
from fractofl.core.wire.update_protocol import (
    SCAFFOLD_CORRECTED_KEY,
    SCAFFOLD_WEIGHT_KEY,
    STEP_SUM_KEY,
)


@pytest.fixture(scope="module")
def member(easy_dataset: Path) -> tuple[RunConfig, MemberData]:
    cfg = RunConfig()
    cfg.data.root = str(easy_dataset)
    cfg.model.image_size = 32
    cfg.strategy = replace(cfg.strategy, name="scaffold")
    cfg.train = replace(cfg.train, local_epochs=1)
    return cfg, load_member_data(member_dir(easy_dataset, 0), cfg, easy_dataset / "cache")


def _kept(context: Context, name: str) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in context.state.array_records[name].items()}


def test_a_member_keeps_its_control_and_corrects_the_next_round(
    member: tuple[RunConfig, MemberData],
) -> None:
    # Prepare
    cfg, data = member
    context = Context(1, 1, {}, RecordDict(), {})
    model = model_for(cfg)
    first_global = state_as_numpy(model)
    parameters = [name for name, _ in model.named_parameters()]
    # Execute: round 1, no step sum from the coordinator yet
    delta, values = _local_update(cfg, data, model, ConfigRecord({"server-round": 1}), context)
    # Assert: uncorrected; c_i = -delta / S_i; the global model it got is kept
    step_sum = float(values[STEP_SUM_KEY])
    assert values[SCAFFOLD_CORRECTED_KEY] == 0
    assert values[SCAFFOLD_WEIGHT_KEY] == pytest.approx(len(data.train) / step_sum)
    steps = -(-len(data.train.for_training(cfg.train.tiles_per_image)) // cfg.train.batch_size)
    assert step_sum == pytest.approx(sgd_step_sum(cfg.train.lr, cfg.train.momentum, steps))
    control = _kept(context, CONTROL_RECORD)
    assert set(control) == set(parameters)
    for key in parameters:
        np.testing.assert_allclose(control[key], -delta[key] / step_sum, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(_kept(context, RECEIVED_RECORD)[key], first_global[key])
    # Execute: round 2, from a moved global model, with the federation's step sum
    second_global = {
        k: v + 0.5 * delta[k] if k in parameters else v for k, v in first_global.items()
    }
    config = ConfigRecord({"server-round": 2, STEP_SUM_KEY: 2 * step_sum})
    applied = gradient_correction(context.state, second_global, config, 2)
    assert applied is not None
    model.load_state_dict({k: torch.from_numpy(v) for k, v in second_global.items()})
    delta_2, values_2 = _local_update(cfg, data, model, config, context)
    # Assert: c = -(x2 - x1) / S = -delta / 4 / S_i, so c - c_i = -delta / 4S + delta / S
    assert values_2[SCAFFOLD_CORRECTED_KEY] == 1
    for key in parameters:
        expected = -0.25 * delta[key] / step_sum + delta[key] / step_sum
        np.testing.assert_allclose(applied[key], expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            _kept(context, CONTROL_RECORD)[key],
            -delta_2[key] / float(values_2[STEP_SUM_KEY]) - applied[key],
            rtol=1e-4,
            atol=1e-6,
        )
    # A member that missed round 3 has no model of round 3 to read round 4's control off
    assert gradient_correction(context.state, second_global, config, 4) is None


def test_a_members_evaluation_keeps_to_train_threads(
    member: tuple[RunConfig, MemberData],
) -> None:
    cfg, data = member
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        evaluate_locally(model_for(cfg), data, replace(cfg, train=replace(cfg.train, threads=1)))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
