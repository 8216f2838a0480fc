"""The per-round recorder and the run folder, without a simulation."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.training import EvalResult
from fractofl.server.recorder import RoundRecorder, RoundRow
from fractofl.server.reporting import read_metrics, write_metrics
from fractofl.server.rounds import RoundTimings
from fractofl.server.run_folder import RunFolder


def _reply(examples: int, loss: float, crc: int) -> RecordDict:
    return RecordDict(
        {"metrics": MetricRecord({"num-examples": examples, "train-loss": loss, "config-crc": crc})}
    )


def _fixed_eval(accuracy: float) -> EvalResult:
    return EvalResult(0.5, accuracy, accuracy, np.eye(2, dtype=np.int64), 2)


def test_round_row_combines_member_and_coordinator_metrics() -> None:
    # Prepare
    rows_seen: list[RoundRow] = []
    recorder = RoundRecorder(
        evaluate_global=lambda _: _fixed_eval(0.75),
        on_round=lambda row, _: rows_seen.append(row),
        expected_config_crc=111,
    )
    # Execute: round 0, then a round with three replies, one of them on another config.
    recorder.evaluate(0, ArrayRecord())
    aggregated = recorder.aggregate_train_metrics(
        [_reply(10, 1.0, 111), _reply(30, 2.0, 111), _reply(20, 4.0, 999)], "num-examples"
    )
    recorder.evaluate(1, ArrayRecord())
    # Assert
    assert "config-crc" not in aggregated
    first, second = rows_seen
    assert first.members_answered == 0 and math.isnan(first.mean_train_loss)
    assert second.members_answered == 3
    assert second.mean_train_loss == pytest.approx((10 * 1 + 30 * 2 + 20 * 4) / 60)
    assert second.config_mismatches == 1
    assert second.test_accuracy == 0.75


def test_a_round_s_row_carries_its_phase_timings_and_the_coordinator_s_own_wait() -> None:
    # Prepare: a coordinator evaluation that takes measurable time (its scoring)
    rows_seen: list[RoundRow] = []

    def slow_eval(_: ArrayRecord) -> EvalResult:
        time.sleep(0.05)  # the scoring being timed
        return _fixed_eval(0.5)

    recorder = RoundRecorder(slow_eval, lambda row, _: rows_seen.append(row), 111)
    # Execute: round 0 (no exchange), then round 1 with the round loop's timings
    recorder.evaluate(0, ArrayRecord())
    recorder.record_timings(RoundTimings(2.0, 0.25, 1.5, 60.0))
    recorder.evaluate(1, ArrayRecord())
    recorder.evaluate(2, ArrayRecord())  # a round whose timings never came
    # Assert: round 0 has only the coordinator's scoring; round 1 the loop's phases and,
    # as the coordinator's, its wait beyond the members plus its scoring; round 2 none of
    # round 1's (a 60 s wait that a 0.05 s scoring cannot reach)
    zero, one, two = rows_seen
    assert all(math.isnan(v) for v in (zero.train_s, zero.aggregate_s, zero.member_eval_s))
    assert zero.coordinator_eval_s >= 0.05
    assert (one.train_s, one.aggregate_s, one.member_eval_s) == (2.0, 0.25, 1.5)
    assert one.coordinator_eval_s >= 60.0 + 0.05
    assert math.isnan(two.train_s) and two.coordinator_eval_s < 60.0
    assert set(RoundRow.clock_columns()) <= set(RoundRow.columns())


def test_metrics_file_round_trips(tmp_path: Path) -> None:
    rows = [
        RoundRow(0, 0, math.nan, 0.25, 0.1, 1.4, math.nan, 0, 0, math.nan, 0.1),
        RoundRow(1, 4, 0.9, 0.5, 0.45, 1.1, 0.55, 0, 1, 1234.0, 3.2),
    ]
    write_metrics(rows, tmp_path / "metrics.csv")
    back = read_metrics(tmp_path / "metrics.csv")
    assert [r["round"] for r in back] == [0, 1]
    assert math.isnan(back[0]["mean_train_loss"]) and back[1]["members_answered"] == 4
    assert back[1]["refused_updates"] == 1 and back[1]["bytes_per_member"] == 1234.0
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_run_folder_never_overwrites_an_earlier_run(tmp_path: Path) -> None:
    cfg = RunConfig()
    cfg.output.root, cfg.output.name = str(tmp_path), "run-a"
    first = RunFolder.create(cfg, "id1", kind="federated")
    assert (first.path / "config.yaml").is_file()
    with pytest.raises(FileExistsError, match=r"choose another output\.name"):
        RunFolder.create(cfg, "id2", kind="federated")


def _reply_with_reference(examples: int, copy: int | None) -> RecordDict:
    metrics = MetricRecord({"num-examples": examples, "train-loss": 1.0, "config-crc": 111})
    if copy is not None:
        metrics["reference-set"] = copy
    return RecordDict({"metrics": metrics})


def test_members_that_trained_with_different_reference_sets_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    recorder = RoundRecorder(lambda _: _fixed_eval(0.5), lambda row, _: None, 111)
    same = [_reply_with_reference(10, 0xABC), _reply_with_reference(20, 0xABC)]
    # Execute / Assert: the same copy everywhere is said once, is no mean, and no warning
    with caplog.at_level("INFO", logger="fractofl"):
        aggregated = recorder.aggregate_train_metrics(same, "num-examples")
        recorder.aggregate_train_metrics(same, "num-examples")
    assert "reference-set" not in aggregated
    assert caplog.text.count("members trained with the reference set copy 00000abc") == 1
    assert "different reference sets" not in caplog.text
    # ... a copy that differs, and a member with none, are
    replies = [*same, _reply_with_reference(5, 0xDEF), _reply_with_reference(5, None)]
    with caplog.at_level("WARNING", logger="fractofl"):
        recorder.aggregate_train_metrics(replies, "num-examples")
    assert "members trained with different reference sets (2 with copy 00000abc, " in caplog.text
    assert "1 with copy 00000def" in caplog.text and "1 with none" in caplog.text
