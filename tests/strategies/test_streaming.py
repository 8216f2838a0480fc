"""Streaming aggregation: replies screened as they arrive, their bytes on disk until the
round's norm test, the mean folded one update at a time; the same bits as gathering."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error

from fractofl.core.config.run_config import RunConfig
from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.core.wire.update_protocol import UNIT_WEIGHT_KEY
from fractofl.strategies.aggregation_mode import (
    MEAN_STRATEGIES,
    AggregationSettingsError,
    streams_updates,
)
from fractofl.strategies.guard import UpdateGuard, UpdateVerdict
from fractofl.strategies.privacy import DifferentialPrivacy, rdp_accountant
from fractofl.strategies.registry import build_strategy
from fractofl.strategies.spill import SpillSpaceError, UpdateSpill
from tests.strategies.flower_grid import grid_with_nodes
from tests.strategies.test_strategies import (
    FLOWER_EQUIVALENT,
    MEMBERS,
    common_args,
    global_model,
    member_deltas,
    replies,
)

Arrays = dict[str, np.ndarray]


def _guard(name: str, spec: CompressionSpec, verdicts: list[UpdateVerdict]) -> UpdateGuard:
    return build_strategy(
        name,
        common_args(),
        FLOWER_EQUIVALENT[name][1],
        spec,
        5.0,
        listener=lambda _, v: verdicts.extend(v),
        statistics_keys=frozenset({"bn.running_var"}),
    )


def _instructions(guard: UpdateGuard, server_round: int, start: Arrays) -> list[Message]:
    """The round's instructions, pushed through a real in-memory Grid (which gives them
    their message ids, as in a run)."""
    grid, _ = grid_with_nodes(MEMBERS)
    record = ArrayRecord({k: Array(v) for k, v in start.items()})
    instructions = list(guard.configure_train(server_round, record, ConfigRecord(), grid))
    grid.push_messages(instructions)
    return instructions


def _payloads(spec: CompressionSpec) -> list[Arrays]:
    """Five members' updates: one holds NaN, one is scaled far above the others."""
    deltas = member_deltas()
    deltas[1] = {k: (-20 * v if k.startswith("conv") else v) for k, v in deltas[1].items()}
    payloads = [encode_update(d, spec) for d in deltas]
    payloads[3] = {**payloads[3], "conv.bias": np.full(4, np.nan, np.float32)}
    return payloads


def _two_rounds(
    name: str, spec: CompressionSpec, spill: Path | None
) -> tuple[list[Arrays], list[UpdateVerdict], list[dict[str, float]]]:
    """Two rounds of ``name`` behind the guard, gathered (``spill=None``) or streamed; the
    global arrays after each, the verdicts and the aggregated metrics."""
    verdicts: list[UpdateVerdict] = []
    guard = _guard(name, spec, verdicts)
    if spill is not None:
        guard.spill = UpdateSpill(spill, min_free_mb=0)
    arrays, results, metrics = global_model(), [], []
    for server_round in (1, 2):
        messages = replies(_instructions(guard, server_round, arrays), _payloads(spec))
        if spill is not None:
            messages = [kept for msg in messages if (kept := guard.receive(msg)) is not None]
            assert all(not msg.content.array_records for msg in messages)  # only metrics kept
            assert len(list(spill.iterdir())) == 4  # NaN refused on arrival, the outlier not yet
        aggregated, aggregated_metrics = guard.aggregate_train(server_round, messages)
        assert aggregated is not None and aggregated_metrics is not None
        arrays = {k: a.numpy() for k, a in aggregated.items()}
        results.append(arrays)
        metrics.append(dict(aggregated_metrics))
        assert spill is None or not spill.exists()  # emptied when the round is aggregated
    return results, verdicts, metrics


def _without_node(verdict: UpdateVerdict) -> tuple[bool, str, int, str]:
    return verdict.accepted, verdict.reason, verdict.bytes_sent, repr(verdict.norm)


@pytest.mark.parametrize("name", MEAN_STRATEGIES)
@pytest.mark.parametrize(
    "spec", [CompressionSpec("none"), CompressionSpec("int8", topk_fraction=0.5)], ids=str
)
def test_streamed_rounds_equal_gathered_rounds_to_the_bit(
    name: str, spec: CompressionSpec, tmp_path: Path
) -> None:
    gathered, gathered_verdicts, gathered_metrics = _two_rounds(name, spec, None)
    streamed, streamed_verdicts, streamed_metrics = _two_rounds(name, spec, tmp_path / "spill")
    for before, after in zip(gathered, streamed, strict=True):
        assert before.keys() == after.keys()
        for key in before:
            assert before[key].dtype == after[key].dtype
            np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    # Node ids differ between the two grids; everything else about each verdict is equal.
    assert [_without_node(v) for v in gathered_verdicts] == [
        _without_node(v) for v in streamed_verdicts
    ]
    assert sum(not v.accepted for v in streamed_verdicts) == 4  # NaN and outlier, twice
    assert gathered_metrics == streamed_metrics


def test_streamed_differential_privacy_equals_gathered(tmp_path: Path) -> None:
    def run(spill: Path | None) -> Arrays:
        guard = _guard("fedavg", CompressionSpec("none"), [])
        if spill is not None:
            guard.spill = UpdateSpill(spill, min_free_mb=0)
        private = DifferentialPrivacy(guard, 0.5, 10.0, rdp_accountant(MEMBERS, 1e-5, 0.0))
        grid, _ = grid_with_nodes(MEMBERS)
        start = ArrayRecord({k: Array(v) for k, v in global_model().items()})
        instructions = list(private.configure_train(1, start, ConfigRecord(), grid))
        grid.push_messages(instructions)
        messages = [
            Message(
                RecordDict(
                    {
                        "arrays": ArrayRecord({k: Array(v) for k, v in delta.items()}),
                        "metrics": MetricRecord({"num-examples": 10, UNIT_WEIGHT_KEY: 1}),
                    }
                ),
                reply_to=instruction,
            )
            for instruction, delta in zip(instructions, member_deltas(), strict=True)
        ]
        if spill is not None:
            messages = [kept for m in messages if (kept := guard.receive(m)) is not None]
        np.random.seed(7)  # Flower's Gaussian noise draws from numpy's global state
        arrays, _ = private.aggregate_train(1, messages)
        assert arrays is not None and guard.accepted_count == MEMBERS
        return {k: a.numpy() for k, a in arrays.items()}

    gathered, streamed = run(None), run(tmp_path / "spill")
    for key in gathered:
        np.testing.assert_array_equal(gathered[key], streamed[key], err_msg=key)


def _large_reply_stream(guard: UpdateGuard, count: int, size: int) -> Iterator[Message]:
    """``count`` replies of ``size`` float32 values each, made one at a time."""
    grid, _ = grid_with_nodes(count)
    start = ArrayRecord({"w": Array(np.zeros(size, np.float32))})
    instructions = list(guard.configure_train(1, start, ConfigRecord(), grid))
    grid.push_messages(instructions)
    rng = np.random.default_rng(0)
    for instruction in instructions:
        delta = {"w": rng.standard_normal(size, dtype=np.float32) * 0.01}
        payload = encode_update(delta, CompressionSpec("none"))
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in payload.items()}),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        yield Message(content, reply_to=instruction)


def test_streaming_holds_one_update_in_memory_whatever_the_number_of_members(
    tmp_path: Path,
) -> None:
    # 20 replies of 4 MB each: gathered, the round holds all of them; streamed, the spill
    # does, and the coordinator's memory stays a small multiple of one update (the one
    # being made, its bytes, the global model, the one read back from the spill).
    count, size = 20, 1_000_000
    model_bytes = 4 * size

    def peak(streamed: bool) -> int:
        guard = build_strategy("fedavg", common_args(), {}, CompressionSpec("none"), 5.0)
        if streamed:
            guard.spill = UpdateSpill(tmp_path / "spill", min_free_mb=0)
        tracemalloc.start()
        try:
            stream = _large_reply_stream(guard, count, size)
            if streamed:
                kept = [m for msg in stream if (m := guard.receive(msg)) is not None]
            else:
                kept = list(stream)
            arrays, _ = guard.aggregate_train(1, kept)
            assert arrays is not None
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    gathered, streamed = peak(False), peak(True)
    assert gathered > count * model_bytes
    assert streamed < 8 * model_bytes, f"streamed peak {streamed / 1e6:.1f} MB"


def test_a_reply_to_an_earlier_round_is_dropped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    guard = _guard("fedavg", CompressionSpec("none"), [])
    guard.spill = UpdateSpill(tmp_path / "spill", min_free_mb=0)
    payloads = [encode_update(d, CompressionSpec("none")) for d in member_deltas()]
    late = replies(_instructions(guard, 1, global_model()), payloads)[0]
    current = replies(_instructions(guard, 2, global_model()), payloads)
    with caplog.at_level(logging.WARNING, logger="fractofl"):
        assert guard.receive(late) is None
    assert "round 2: dropped a reply from node" in caplog.text
    assert "earlier round or attempt" in caplog.text
    kept = [m for msg in current if (m := guard.receive(msg)) is not None]
    assert len(kept) == MEMBERS
    assert guard.receive(late) is None  # still never aggregated


def test_error_replies_pass_through_the_stream(tmp_path: Path) -> None:
    guard = _guard("fedavg", CompressionSpec("none"), [])
    guard.spill = UpdateSpill(tmp_path / "spill", min_free_mb=0)
    instructions = _instructions(guard, 1, global_model())
    payloads = [encode_update(d, CompressionSpec("none")) for d in member_deltas()]
    failed = Message(Error(code=0, reason="member crashed"), reply_to=instructions[0])
    messages = [failed, *replies(instructions, payloads)[1:]]
    kept = [m for msg in messages if (m := guard.receive(msg)) is not None]
    assert kept[0] is failed
    arrays, _ = guard.aggregate_train(1, kept)
    assert arrays is not None and guard.accepted_count == MEMBERS - 1


def test_a_full_spill_disk_stops_with_the_setting_named(tmp_path: Path) -> None:
    guard = _guard("fedavg", CompressionSpec("none"), [])
    guard.spill = UpdateSpill(tmp_path / "spill", min_free_mb=10**9)  # a petabyte free
    payloads = [encode_update(d, CompressionSpec("none")) for d in member_deltas()]
    reply = replies(_instructions(guard, 1, global_model()), payloads)[0]
    with pytest.raises(SpillSpaceError, match=r"updates\.spill_min_free_mb=1000000000"):
        guard.receive(reply)
    assert not any((tmp_path / "spill").iterdir())  # nothing half-written


def test_aggregation_mode_follows_the_strategy_and_refuses_what_cannot_stream() -> None:
    def cfg(mode: str, strategy: str, secagg: bool = False) -> RunConfig:
        config = RunConfig()
        config.updates.aggregation = mode
        config.strategy.name = strategy
        config.privacy.secure_aggregation = secagg
        return config

    assert streams_updates(cfg("auto", "fedadam"))
    assert not streams_updates(cfg("auto", "krum"))
    assert not streams_updates(cfg("auto", "fedavg", secagg=True))
    assert not streams_updates(cfg("gathered", "fedavg"))
    assert streams_updates(cfg("streamed", "fedprox"))
    with pytest.raises(AggregationSettingsError, match="strategy='krum' compares all"):
        streams_updates(cfg("streamed", "krum"))
    with pytest.raises(AggregationSettingsError, match="secure aggregation exchanges"):
        streams_updates(cfg("streamed", "fedavg", secagg=True))
    with pytest.raises(AggregationSettingsError, match="valid: auto, streamed, gathered"):
        streams_updates(cfg("sometimes", "fedavg"))
