"""Strategy state taken out after a round and put into a fresh strategy (what a resumed
coordinator does) continues exactly as if the coordinator had never stopped."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy import Strategy

from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.strategies.registry import build_strategy
from fractofl.strategies.state import restore_strategy_state, strategy_state
from tests.strategies.test_strategies import (
    FLOWER_EQUIVALENT,
    common_args,
    global_model,
    member_deltas,
    run_round,
)

SPEC = CompressionSpec("none")


def _strategy(name: str) -> Strategy:
    return build_strategy(name, common_args(), dict(FLOWER_EQUIVALENT[name][1]), SPEC, 5.0)


def _round(
    strategy: Strategy, server_round: int, arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    scale = 1.0 + server_round  # a different update every round
    payloads = [
        encode_update({k: v * scale if v.dtype.kind == "f" else v for k, v in d.items()}, SPEC)
        for d in member_deltas()
    ]
    return run_round(strategy, payloads, server_round, arrays)[0]


@pytest.mark.parametrize(
    ("name", "kept"),
    [("fedadam", "v_t"), ("fedyogi", "v_t"), ("fedadagrad", "v_t"), ("fedavgm", "momentum")],
)
def test_restored_moments_continue_the_run_exactly(name: str, kept: str) -> None:
    # Prepare: an uninterrupted strategy, and one stopped after round 1.
    steady = _strategy(name)
    after_one = _round(steady, 1, global_model())
    uninterrupted = _round(steady, 2, after_one)
    stopped = _strategy(name)
    _round(stopped, 1, global_model())
    state = strategy_state(stopped)
    # Execute: a fresh strategy (a restarted coordinator) gets the state back.
    resumed = _strategy(name)
    restore_strategy_state(resumed, state)
    continued = _round(resumed, 2, after_one)
    # Assert: bit-for-bit the same round 2; without the state it would differ.
    assert kept in state
    for key in uninterrupted:
        np.testing.assert_array_equal(continued[key], uninterrupted[key])
    forgetful = _round(_strategy(name), 2, after_one)
    assert not np.array_equal(forgetful["conv.weight"], uninterrupted["conv.weight"])


def test_stateless_strategies_have_nothing_to_restore() -> None:
    fedavg = _strategy("fedavg")
    _round(fedavg, 1, global_model())
    assert strategy_state(fedavg) == {}
    with pytest.raises(ValueError, match="was the run's strategy changed"):
        restore_strategy_state(fedavg, {"m_t": {"w": np.zeros(2)}})


def test_momentum_is_refused_by_an_adaptive_optimiser_and_moments_by_fedavgm() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy state \['momentum'\].*changed"):
        restore_strategy_state(_strategy("fedadam"), {"momentum": {"w": np.zeros(2)}})
    with pytest.raises(ValueError, match=r"unknown strategy state \['m_t'\].*changed"):
        restore_strategy_state(_strategy("fedavgm"), {"m_t": {"w": np.zeros(2)}})


def test_fedavgm_without_momentum_keeps_no_state_and_resumes() -> None:
    args = {"server_learning_rate": 0.5, "server_momentum": 0.0}
    stopped = build_strategy("fedavgm", common_args(), args, SPEC, 5.0)
    after_one = _round(stopped, 1, global_model())
    assert strategy_state(stopped) == {}
    resumed = build_strategy("fedavgm", common_args(), args, SPEC, 5.0)
    restore_strategy_state(resumed, {})
    steady = _round(stopped, 2, after_one)
    np.testing.assert_array_equal(
        _round(resumed, 2, after_one)["conv.weight"], steady["conv.weight"]
    )
