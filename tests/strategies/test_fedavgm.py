"""FedAvgM behind the update guard: the momentum step worked out by hand, taken from the
global model each round is sent (not from the strategy's own last output), and its
arguments checked."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.strategies.common import CommonStrategyArgs
from fractofl.strategies.fedavgm import FedAvgMFromGlobal, build_fedavgm
from fractofl.strategies.guard import UpdateGuard
from fractofl.strategies.registry import build_strategy
from tests.strategies.flower_grid import grid_with_nodes
from tests.strategies.test_strategies import (
    MEMBERS,
    common_args,
    global_model,
    member_deltas,
    run_round,
    weighted_mean_delta,
)

SPEC = CompressionSpec("none")
RATE, MOMENTUM = 0.5, 0.9
Arrays = dict[str, np.ndarray]


def _guarded() -> UpdateGuard:
    return build_strategy(
        "fedavgm",
        common_args(),
        {"server_learning_rate": RATE, "server_momentum": MOMENTUM},
        SPEC,
        100,
        statistics_keys=frozenset({"bn.running_var", "bn.num_batches_tracked"}),
    )


def _round(strategy: UpdateGuard, server_round: int, start: Arrays, deltas: list[Arrays]) -> Arrays:
    return run_round(strategy, [encode_update(d, SPEC) for d in deltas], server_round, start)[0]


def test_two_rounds_take_the_momentum_step_from_the_global_model_sent() -> None:
    # Prepare: round 2 starts from a global model that is not the strategy's round-1
    # output (as after a resume, or once the guard has put the statistics' mean back).
    strategy = _guarded()
    first = member_deltas()
    second = [{k: 2 * v if v.dtype.kind == "f" else v for k, v in d.items()} for d in first]
    start = global_model()
    # Execute
    after_one = _round(strategy, 1, start, first)
    moved = {**after_one, "conv.weight": after_one["conv.weight"] + 0.25}
    after_two = _round(strategy, 2, moved, second)
    # Assert: weights move by rate * momentum, where the momentum is the mean update of
    # round 1 decayed by MOMENTUM plus round 2's; statistics are the plain mean.
    for key in ("conv.weight", "conv.bias"):
        mean_one, mean_two = weighted_mean_delta(first, key), weighted_mean_delta(second, key)
        np.testing.assert_allclose(after_one[key], start[key] + RATE * mean_one, rtol=1e-5)
        np.testing.assert_allclose(
            after_two[key], moved[key] + RATE * (MOMENTUM * mean_one + mean_two), rtol=1e-5
        )
    np.testing.assert_allclose(
        after_two["bn.running_var"],
        moved["bn.running_var"] + weighted_mean_delta(second, "bn.running_var"),
        rtol=1e-5,
    )
    assert after_two["bn.num_batches_tracked"].dtype == np.int64
    assert after_two["bn.num_batches_tracked"] == 7 + 3 + 3


@pytest.mark.parametrize(
    ("args", "fault"),
    [
        ({"server_momentum": 1.0}, "server_momentum=1.0: must be below 1"),
        ({"server_momentum": -0.1}, "server_momentum=-0.1: must be a finite number >= 0"),
        ({"server_learning_rate": float("nan")}, "server_learning_rate=nan: must be a finite"),
        ({"server_learning_rate": float("inf")}, "server_learning_rate=inf: must be a finite"),
        ({"server_momentum": "high"}, "server_momentum='high': must be a finite number"),
    ],
)
def test_arguments_out_of_range_are_refused_with_the_setting(
    args: dict[str, float], fault: str
) -> None:
    common: CommonStrategyArgs = common_args()
    with pytest.raises(ValueError, match=f"strategy.args.{fault}"):
        build_fedavgm(common, **args)


def test_momentum_from_another_model_is_refused_when_the_round_starts() -> None:
    strategy = _guarded()
    restore = strategy.inner
    assert isinstance(restore, FedAvgMFromGlobal)
    restore.restore_momentum({"conv.weight": np.zeros((4, 1, 3, 3), np.float32)})
    grid, _ = grid_with_nodes(MEMBERS)
    record = ArrayRecord({k: Array(v) for k, v in global_model().items()})
    with pytest.raises(
        ValueError,
        match=r"momentum and the model differ in \['bn.num_batches_tracked'.*another model",
    ):
        list(strategy.configure_train(3, record, ConfigRecord(), grid))
