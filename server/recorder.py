"""Per-round bookkeeping hooked into a Flower strategy's callbacks.

The strategy calls :meth:`RoundRecorder.aggregate_train_metrics` and
:meth:`RoundRecorder.aggregate_evaluate_metrics` when it aggregates member replies, the
round loop (:mod:`fractofl.server.rounds`) reports who answered with
:meth:`RoundRecorder.record_participation`, and :meth:`RoundRecorder.evaluate` (the
``evaluate_fn``) runs after every round: that is where the coordinator test set is
scored and the round's row is completed.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fractofl.core.learning.training import EvalResult
from fractofl.core.wire.member_evaluation import (
    PARTITION_METRIC_KEY,
    PER_CLASS_KEYS,
    VAL_ACCURACY_KEY,
)
from fractofl.core.wire.update_protocol import CONFIG_CRC_KEY, EXAMPLES_KEY, REFERENCE_SET_KEY
from fractofl.server.rounds import Participation, RoundTimings
from fractofl.strategies.guard import UpdateVerdict
from fractofl.strategies.privacy import PrivacySpent

log = logging.getLogger("fractofl")

MEMBER_MIN_ACCURACY = "member_min_val_accuracy"


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
    members_sampled: int = 0
    members_failed: int = 0
    stragglers: int = 0
    attempts: int = 0
    dp_epsilon: float = math.nan
    dp_delta: float = math.nan
    member_min_val_accuracy: float = math.nan
    """The worst member's accuracy on its own validation split (members with one)."""
    train_s: float = math.nan
    """Wall seconds of the round's training exchange, every attempt (see RoundTimings)."""
    aggregate_s: float = math.nan
    member_eval_s: float = math.nan
    coordinator_eval_s: float = math.nan
    """Wall seconds of the coordinator's own scoring of its test set that the round
    waited for: beyond the members' evaluation (beside which it runs), and the
    evaluation call itself."""

    def test_metrics(self) -> dict[str, float]:
        """The metrics a checkpoint or a published version carries: the coordinator
        test set's, and the worst member's validation accuracy when members reported it
        (``registry.retention.best_metric`` picks the best version by one of them)."""
        metrics = {
            "test_accuracy": self.test_accuracy,
            "test_macro_f1": self.test_macro_f1,
            "test_loss": self.test_loss,
        }
        if math.isfinite(self.member_min_val_accuracy):
            metrics[MEMBER_MIN_ACCURACY] = self.member_min_val_accuracy
        return metrics

    @staticmethod
    def columns() -> list[str]:
        """Column names, in file order."""
        return [f.name for f in fields(RoundRow)]

    @staticmethod
    def clock_columns() -> list[str]:
        """The columns that are wall-clock times: they differ between two runs of the
        same config, all else being equal."""
        return ["elapsed_s", "train_s", "aggregate_s", "member_eval_s", "coordinator_eval_s"]


def _worst_accuracy(records: list[RecordDict], weight_key: str) -> float:
    """The lowest validation accuracy among replies of members with a validation split."""
    accuracies = []
    for record in records:
        for metrics in record.metric_records.values():
            weight, accuracy = metrics.get(weight_key, 0), metrics.get(VAL_ACCURACY_KEY)
            if isinstance(weight, int | float) and weight > 0 and isinstance(accuracy, int | float):
                accuracies.append(float(accuracy))
    return min(accuracies, default=math.nan)


def reference_set_copies(records: list[RecordDict]) -> Counter[int]:
    """How many of the members that answered trained with each copy of a reference set
    (by its identity; 0: none)."""
    return Counter(
        int(metrics.get(REFERENCE_SET_KEY, 0))  # type: ignore[arg-type]
        for record in records
        for metrics in record.metric_records.values()
        if EXAMPLES_KEY in metrics
    )


def _copy_name(copy: int) -> str:
    return "none" if copy == 0 else f"copy {copy:08x}"


class RoundRecorder:
    """Collects member metrics and the coordinator's evaluation into one row a round."""

    def __init__(
        self,
        evaluate_global: Callable[[ArrayRecord], EvalResult],
        on_round: Callable[[RoundRow, EvalResult], None],
        expected_config_crc: int,
        rows: list[RoundRow] | None = None,
    ) -> None:
        self._evaluate_global = evaluate_global
        self.privacy_spent: Callable[[], PrivacySpent] | None = None
        """Set under differential privacy: the rows get (epsilon, delta) after each round."""
        self._on_round = on_round
        self._expected_crc = expected_config_crc
        self.rows: list[RoundRow] = list(rows or [])
        # A resumed run's clock continues from its last completed round.
        offset = self.rows[-1].elapsed_s if self.rows else 0.0
        self._started = time.monotonic() - offset
        self._train: dict[str, float] = {}
        self._members_eval: dict[str, float] = {}
        self._worst_member = math.nan
        self._verdicts: list[UpdateVerdict] = []
        self._participation: Participation | None = None
        self._timings: RoundTimings | None = None
        self.last_eval: EvalResult | None = None
        self.contributors: list[int] = []
        """Node ids whose updates the last closed round aggregated."""
        self._reference_copies: set[int] = {0}  # said so far: none (nothing to say)

    def elapsed_s(self) -> float:
        """Seconds since the run started (across a resume)."""
        return time.monotonic() - self._started

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
        self._report_reference_sets(reference_set_copies(records))
        aggregated = aggregate_metricrecords(records, weight_key)
        aggregated.pop(CONFIG_CRC_KEY, None)
        aggregated.pop(REFERENCE_SET_KEY, None)
        aggregated["members"] = len(records)
        aggregated["config-mismatches"] = mismatches
        self._train = {k: float(v) for k, v in aggregated.items()}  # type: ignore[arg-type]
        return aggregated

    def _report_reference_sets(self, copies: Counter[int]) -> None:
        """Say which reference set the members trained with when that changes (once a run
        when it does not), and warn when they did not all train with the same one."""
        if set(copies) == self._reference_copies or not copies:
            return
        self._reference_copies = set(copies)
        if len(copies) == 1:
            (copy,) = copies
            if copy:
                log.info("members trained with the reference set %s", _copy_name(copy))
            return
        shares = ", ".join(f"{count} with {_copy_name(c)}" for c, count in copies.most_common())
        log.warning(
            "members trained with different reference sets (%s): the consortium's reference "
            "set is meant to be the same at every member; ask the others to copy it whole "
            "and pass it to `member join --reference`",
            shares,
        )

    def record_updates(self, server_round: int, verdicts: list[UpdateVerdict]) -> None:
        """Keep the round's update verdicts (refusals, bytes sent) for its row."""
        self._verdicts = list(verdicts)

    def _contributors(self) -> list[int]:
        """The members whose updates the guard accepted this round; without its verdicts
        (secure aggregation), those that answered."""
        if self._verdicts:
            return sorted(v.node_id for v in self._verdicts if v.accepted)
        return sorted(self._participation.answered) if self._participation else []

    def record_participation(self, participation: Participation) -> None:
        """Keep who was asked, answered, failed and was late, for the round's row."""
        self._participation = participation

    def record_timings(self, timings: RoundTimings) -> None:
        """Keep how long the round's phases took, for the round's row."""
        self._timings = timings

    def aggregate_evaluate_metrics(
        self, records: list[RecordDict], weight_key: str
    ) -> MetricRecord:
        """Weighted mean of member validation scores (each member's own, class by class,
        are in ``member_eval.csv``)."""
        self._worst_member = _worst_accuracy(records, weight_key)
        aggregated = aggregate_metricrecords(records, weight_key)
        # a weighted mean of recalls or of partition numbers means nothing: per member only
        for key in (*PER_CLASS_KEYS, PARTITION_METRIC_KEY):
            aggregated.pop(key, None)
        self._members_eval = {k: float(v) for k, v in aggregated.items()}  # type: ignore[arg-type]
        return aggregated

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Score the global model on the coordinator test set and close the round's row."""
        scoring_started = time.monotonic()
        result = self._evaluate_global(arrays)
        scoring_s = time.monotonic() - scoring_started
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
            elapsed_s=self.elapsed_s(),
            member_min_val_accuracy=self._worst_member if server_round else math.nan,
        )
        if self._participation is not None and server_round:
            seen = self._participation
            row.members_sampled = len(seen.sampled)
            row.members_failed = len(seen.failed)
            row.stragglers = len(seen.stragglers)
            row.attempts = seen.attempts
        row.coordinator_eval_s = scoring_s
        if self._timings is not None and server_round:
            timings = self._timings
            row.train_s, row.aggregate_s = timings.train_s, timings.aggregate_s
            row.member_eval_s = timings.member_eval_s
            row.coordinator_eval_s += timings.coordinator_wait_s
        if self.privacy_spent is not None and server_round:
            spent = self.privacy_spent()
            row.dp_epsilon, row.dp_delta = spent.epsilon, spent.delta
        self.contributors = self._contributors() if server_round else []
        self._train, self._members_eval, self._verdicts = {}, {}, []
        self._worst_member = math.nan
        self._participation, self._timings = None, None
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
