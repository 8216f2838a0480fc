"""Per-round bookkeeping hooked into a Flower strategy's callbacks (no copy of ``start()``).

The strategy calls :meth:`RoundRecorder.aggregate_train_metrics` and
:meth:`RoundRecorder.aggregate_evaluate_metrics` when it aggregates member replies,
and :meth:`RoundRecorder.evaluate` (its ``evaluate_fn``) after every round: that is
where the coordinator test set is scored and the round's row is completed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fractofl.core.training import EvalResult
from fractofl.strategies.guard import UpdateVerdict

log = logging.getLogger("fractofl")

CONFIG_CRC_KEY = "config-crc"


@dataclass
class RoundRow:
    """One line of the per-round metrics file."""

    round: int
    members_answered: int
    mean_train_loss: float
    test_accuracy: float
    test_macro_f1: float
    test_loss: float
    member_val_accuracy: float
    config_mismatches: int
    refused_updates: int
    bytes_per_member: float
    elapsed_s: float

    @staticmethod
    def columns() -> list[str]:
        """Column names, in file order."""
        return [f.name for f in fields(RoundRow)]


class RoundRecorder:
    """Collects member metrics and the coordinator's evaluation into one row a round."""

    def __init__(
        self,
        evaluate_global: Callable[[ArrayRecord], EvalResult],
        on_round: Callable[[RoundRow, EvalResult], None],
        expected_config_crc: int,
    ) -> None:
        self._evaluate_global = evaluate_global
        self._on_round = on_round
        self._expected_crc = expected_config_crc
        self._started = time.monotonic()
        self._train: dict[str, float] = {}
        self._members_eval: dict[str, float] = {}
        self._verdicts: list[UpdateVerdict] = []
        self.rows: list[RoundRow] = []
        self.last_eval: EvalResult | None = None

    def aggregate_train_metrics(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        """Weighted mean of member train metrics, plus how many members answered."""
        mismatches = sum(
            1
            for record in records
            for metrics in record.metric_records.values()
            if metrics.get(CONFIG_CRC_KEY, self._expected_crc) != self._expected_crc
        )
        if mismatches:
            log.warning(
                "%d member(s) trained with a configuration other than the run's", mismatches
            )
        aggregated = aggregate_metricrecords(records, weight_key)
        aggregated.pop(CONFIG_CRC_KEY, None)
        aggregated["members"] = len(records)
        aggregated["config-mismatches"] = mismatches
        self._train = {k: float(v) for k, v in aggregated.items()}  # type: ignore[arg-type]
        return aggregated

    def record_updates(self, server_round: int, verdicts: list[UpdateVerdict]) -> None:
        """Keep the round's update verdicts (refusals, bytes sent) for its row."""
        self._verdicts = list(verdicts)

    def aggregate_evaluate_metrics(
        self, records: list[RecordDict], weight_key: str
    ) -> MetricRecord:
        """Weighted mean of member validation metrics."""
        aggregated = aggregate_metricrecords(records, weight_key)
        self._members_eval = {k: float(v) for k, v in aggregated.items()}  # type: ignore[arg-type]
        return aggregated

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Score the global model on the coordinator test set and close the round's row."""
        result = self._evaluate_global(arrays)
        row = RoundRow(
            round=server_round,
            members_answered=int(self._train.get("members", 0)) if server_round else 0,
            mean_train_loss=self._train.get("train-loss", math.nan) if server_round else math.nan,
            test_accuracy=result.accuracy,
            test_macro_f1=result.macro_f1,
            test_loss=result.loss,
            member_val_accuracy=(
                self._members_eval.get("val-accuracy", math.nan) if server_round else math.nan
            ),
            config_mismatches=int(self._train.get("config-mismatches", 0)) if server_round else 0,
            refused_updates=sum(not v.accepted for v in self._verdicts),
            bytes_per_member=(
                sum(v.bytes_sent for v in self._verdicts) / len(self._verdicts)
                if self._verdicts
                else math.nan
            ),
            elapsed_s=time.monotonic() - self._started,
        )
        self._train, self._members_eval, self._verdicts = {}, {}, []
        self.rows.append(row)
        self.last_eval = result
        self._on_round(row, result)
        return MetricRecord(
            {
                "test-accuracy": result.accuracy,
                "test-macro-f1": result.macro_f1,
                "test-loss": result.loss,
            }
        )
