"""The update guard: bad updates are refused with a reason, the round goes on."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.app.error import Error

from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.strategies.guard import UpdateVerdict
from fractofl.strategies.registry import build_strategy
from fractofl.strategies.validation import (
    measure_update,
    norm_outliers,
    statistics_problem,
    structural_problem,
    update_norm,
)
from tests.strategies.flower_grid import grid_with_nodes
from tests.strategies.test_strategies import (
    EXAMPLES,
    MEMBERS,
    common_args,
    global_model,
    member_deltas,
    replies,
)


def _screen(
    spec: CompressionSpec,
    payloads: list[dict[str, np.ndarray]],
    statistics_keys: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray] | None, list[UpdateVerdict], list[Message]]:
    verdicts: list[UpdateVerdict] = []
    strategy = build_strategy(
        "fedavg",
        common_args(),
        {},
        spec,
        5.0,
        listener=lambda _, v: verdicts.extend(v),
        statistics_keys=statistics_keys,
    )
    grid, _ = grid_with_nodes(MEMBERS)
    start = ArrayRecord({k: Array(v) for k, v in global_model().items()})
    instructions = list(strategy.configure_train(3, start, ConfigRecord(), grid))
    messages = replies(instructions, payloads)
    arrays, _ = strategy.aggregate_train(3, messages)
    got = None if arrays is None else {k: a.numpy() for k, a in arrays.items()}
    return got, verdicts, messages


def test_each_kind_of_bad_update_is_refused_and_the_rest_aggregated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: five members; four send a broken update, one each way... plus one honest.
    spec = CompressionSpec("none")
    deltas = member_deltas()
    payloads = [encode_update(d, spec) for d in deltas]
    payloads[0] = {**payloads[0], "conv.weight": np.full((4, 1, 3, 3), np.nan, np.float32)}
    payloads[1] = {k: v for k, v in payloads[1].items() if k != "conv.bias"}
    payloads[2] = {**payloads[2], "conv.bias": np.zeros(5, np.float32)}
    payloads[3] = {**payloads[3], "conv.bias": payloads[3]["conv.bias"].astype(np.float64)}
    # Execute
    with caplog.at_level(logging.WARNING, logger="fractofl"):
        got, verdicts, messages = _screen(spec, payloads)
    # Assert: only member 4 is aggregated; every refusal names node, round and reason.
    assert got is not None
    honest = global_model()["conv.weight"] + deltas[4]["conv.weight"]
    np.testing.assert_allclose(got["conv.weight"], honest, atol=1e-6)
    refused = {v.node_id: v.reason for v in verdicts if not v.accepted}
    nodes = [m.metadata.src_node_id for m in messages]
    assert set(refused) == set(nodes[:4])
    assert "NaN" in refused[nodes[0]]
    assert "missing" in refused[nodes[1]] or "keys" in refused[nodes[1]]
    assert "shape" in refused[nodes[2]]
    assert "float64" in refused[nodes[3]]
    for node in nodes[:4]:
        assert f"round 3: refused the update of node {node}" in caplog.text


def test_scaled_update_is_refused_by_the_norm_test() -> None:
    spec = CompressionSpec("none")
    deltas = member_deltas()
    deltas[2] = {k: (-10 * v if v.dtype.kind == "f" else v) for k, v in deltas[2].items()}
    got, verdicts, messages = _screen(spec, [encode_update(d, spec) for d in deltas])
    refused = [v for v in verdicts if not v.accepted]
    assert [v.node_id for v in refused] == [messages[2].metadata.src_node_id]
    assert "above 5 x the median" in refused[0].reason
    honest = [i for i in range(MEMBERS) if i != 2]
    weights = np.array([EXAMPLES[i] for i in honest], dtype=np.float64)
    expected = global_model()["conv.weight"] + np.tensordot(
        weights / weights.sum(), np.stack([deltas[i]["conv.weight"] for i in honest]), 1
    )
    assert got is not None
    np.testing.assert_allclose(got["conv.weight"], expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["none", "float16", "int8"])
def test_bytes_sent_are_the_payload_bytes_on_the_wire(mode: str) -> None:
    spec = CompressionSpec(mode, topk_fraction=0.5)
    payloads = [encode_update(d, spec) for d in member_deltas()]
    _, verdicts, messages = _screen(spec, payloads)
    wire = {
        m.metadata.src_node_id: sum(len(Array(np.asarray(v)).data) for v in p.values())
        for m, p in zip(messages, payloads, strict=True)
    }
    assert all(v.accepted for v in verdicts)
    assert {v.node_id: v.bytes_sent for v in verdicts} == wire


def test_int8_nan_scale_is_refused() -> None:
    spec = CompressionSpec("int8")
    deltas = member_deltas()
    deltas[1]["conv.bias"][0] = np.nan
    _, verdicts, messages = _screen(spec, [encode_update(d, spec) for d in deltas])
    refused = [v for v in verdicts if not v.accepted]
    assert [v.node_id for v in refused] == [messages[1].metadata.src_node_id]
    assert "conv.bias::scale" in refused[0].reason


def test_failed_member_replies_pass_through_to_flower() -> None:
    spec = CompressionSpec("none")
    payloads = [encode_update(d, spec) for d in member_deltas()]
    strategy = build_strategy("fedavg", common_args(), {}, spec, 5.0)
    grid, _ = grid_with_nodes(MEMBERS)
    start = ArrayRecord({k: Array(v) for k, v in global_model().items()})
    instructions = list(strategy.configure_train(1, start, ConfigRecord(), grid))
    messages = replies(instructions, payloads)
    failed = Message(Error(code=0, reason="member crashed"), reply_to=instructions[0])
    arrays, metrics = strategy.aggregate_train(1, [*messages[1:], failed])
    assert arrays is not None and metrics is not None


def test_validation_functions_by_hand() -> None:
    reference = {"w": np.zeros(3, np.float32), "n": np.array(1, np.int64)}
    assert structural_problem({"w": np.ones(3, np.float32), "n": np.array(0)}, reference) is None
    assert update_norm({"w": np.array([3.0, 4.0], np.float32), "n": np.array(9)}) == 5.0
    assert norm_outliers([1.0, 1.1, 0.9, 10.0], 5.0) == [3]
    assert norm_outliers([1.0, 100.0], 5.0) == []  # too few updates for a median
    assert norm_outliers([0.0, 0.0, 3.0], 5.0) == []  # zero median: no reference
    assert measure_update({"w": np.array([1.0, np.inf], np.float32)})[1] == (
        "w: holds NaN or Inf (or values beyond 1e19)"
    )


def test_running_statistics_stay_out_of_the_norm_and_variances_stay_positive() -> None:
    stats = frozenset({"bn.running_var"})
    delta = {"w": np.array([3.0, 4.0], np.float32), "bn.running_var": np.full(2, 100, np.float32)}
    reference = {"w": np.zeros(2, np.float32), "bn.running_var": np.ones(2, np.float32)}
    assert measure_update(delta, stats) == (5.0, None)
    assert measure_update(delta)[0] > 100
    assert statistics_problem(delta, reference, stats) is None
    flipped = {**delta, "bn.running_var": np.full(2, -10, np.float32)}
    assert statistics_problem(flipped, reference, stats) == (
        "bn.running_var: a running variance would turn negative"
    )
    means = frozenset({"bn.running_mean"})  # a mean may well turn negative
    shifted = {"bn.running_mean": np.full(2, -3, np.float32)}
    assert statistics_problem(shifted, {"bn.running_mean": np.zeros(2, np.float32)}, means) is None


def test_guard_refuses_an_update_that_makes_a_variance_negative() -> None:
    spec = CompressionSpec("none")
    deltas = member_deltas()
    deltas[3]["bn.running_var"] = np.full(4, -5.0, np.float32)  # reference variance is 1
    payloads = [encode_update(d, spec) for d in deltas]
    arrays, verdicts, messages = _screen(spec, payloads, frozenset({"bn.running_var"}))
    refused = [v for v in verdicts if not v.accepted]
    assert arrays is not None
    assert [v.node_id for v in refused] == [messages[3].metadata.src_node_id]
    assert "running variance would turn negative" in refused[0].reason


def test_truncated_array_bytes_are_refused_not_raised() -> None:
    spec = CompressionSpec("none")
    payloads = [encode_update(d, spec) for d in member_deltas()]
    verdicts: list[UpdateVerdict] = []
    strategy = build_strategy(
        "fedavg", common_args(), {}, spec, 5.0, listener=lambda _, v: verdicts.extend(v)
    )
    grid, _ = grid_with_nodes(MEMBERS)
    start = ArrayRecord({k: Array(v) for k, v in global_model().items()})
    instructions = list(strategy.configure_train(1, start, ConfigRecord(), grid))
    messages = replies(instructions, payloads)
    record = messages[0].content.array_records["arrays"]
    broken = record["conv.weight"]
    record["conv.weight"] = Array(broken.dtype, broken.shape, broken.stype, broken.data[:-8])
    arrays, _ = strategy.aggregate_train(1, messages)
    assert arrays is not None
    assert [v.accepted for v in verdicts].count(False) == 1
    assert "undecodable" in next(v.reason for v in verdicts if not v.accepted)
