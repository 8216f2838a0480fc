"""The coordinator's learning-rate schedule: the rate of each round, what a round's
instruction carries, and what a member trains with."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fractofl.client.app import _local_update
from fractofl.client.member import state_as_numpy
from fractofl.core.config.run_config import RunConfig, TrainConfig, config_crc
from fractofl.core.learning.schedule import round_lr
from fractofl.core.model.factory import model_for
from fractofl.core.wire.compression import CompressionSpec
from fractofl.core.wire.update_protocol import CONFIG_CRC_KEY, LEARNING_RATE_KEY
from fractofl.server.coordinator import scheduled_lr
from fractofl.server.rounds import Participation, RoundPolicy, _train_attempt
from fractofl.strategies.registry import CommonStrategyArgs, build_strategy
from tests.conftest import easy_member_zero
from tests.strategies.flower_grid import grid_with_nodes


def test_cosine_goes_from_lr_to_its_final_fraction_and_constant_stays() -> None:
    # Prepare
    cosine = TrainConfig(lr=0.1, lr_schedule="cosine", lr_final_fraction=0.2)
    # Execute
    rates = [round_lr(cosine, r, 5) for r in range(1, 6)]
    # Assert
    assert rates[0] == pytest.approx(0.1) and rates[-1] == pytest.approx(0.02)
    assert rates[2] == pytest.approx(0.06)  # halfway: the mean of the two ends
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert {round_lr(TrainConfig(lr=0.1), r, 5) for r in range(1, 6)} == {0.1}


def test_each_rounds_instruction_carries_the_scheduled_rate() -> None:
    # Prepare: FedAvg behind the guard on a real in-memory Grid, a cosine schedule
    grid, _ = grid_with_nodes(2)
    common = CommonStrategyArgs(1.0, 1.0, 1, 1, 1, aggregate_metricrecords, aggregate_metricrecords)
    strategy = build_strategy("fedavg", common, {}, CompressionSpec("none"), 5.0)
    cfg = RunConfig()
    cfg.train = replace(cfg.train, lr_schedule="cosine")
    sent: dict[int, list[float]] = {}

    def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        for msg in messages:
            config = msg.content.config_records["config"]
            sent.setdefault(int(config["server-round"]), []).append(config[LEARNING_RATE_KEY])
        return []

    policy = RoundPolicy(5, 0, 1, 1, exchange=exchange, round_config=lambda r: scheduled_lr(cfg, r))
    arrays = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    # Execute
    for server_round in (1, cfg.federation.rounds):
        _train_attempt(strategy, grid, server_round, arrays, policy, Participation(server_round))
    # Assert
    assert sent == {
        1: [cfg.train.lr] * 2,
        cfg.federation.rounds: [pytest.approx(cfg.train.lr * cfg.train.lr_final_fraction)] * 2,
    }
    constant = RunConfig()
    assert scheduled_lr(constant, 3) == ConfigRecord()  # constant: members use train.lr


def test_a_member_trains_with_the_rate_the_round_sends(easy_dataset: Path) -> None:
    # Prepare: member 0's images and the same global model twice
    cfg, data = easy_member_zero(easy_dataset, local_epochs=1)
    context = Context(1, 1, {}, RecordDict(), {})
    moved, crcs = {}, set()
    # Execute
    for lr in (0.0, 0.05):
        model = model_for(cfg)
        start = state_as_numpy(model)
        config = ConfigRecord({"server-round": 1, LEARNING_RATE_KEY: lr})
        delta, metrics = _local_update(cfg, data, model, config, context)
        moved[lr] = max(float(np.abs(delta[k]).max()) for k in start if "weight" in k)
        crcs.add(metrics[CONFIG_CRC_KEY])
    # Assert: sent rate 0, no weight moves (train.lr is 0.05): the member uses the rate sent
    assert moved[0.0] == 0.0
    assert moved[0.05] > 0.0
    # and reports the run's configuration, not one with the round's rate in it: the
    # coordinator counts a member whose CRC differs as trained with another configuration
    assert crcs == {config_crc(cfg)}
