"""SCAFFOLD (Karimireddy et al., ICML 2020, https://arxiv.org/abs/1910.06378), option II.

The drift correction happens on the members (:mod:`fractofl.client.scaffold`). The
coordinator weighs each member's update by its examples per unit of step sum
(``scaffold-weight``, ``n_i / S_i``) instead of by its examples, and sends the round's
mean step sum under those weights (the examples-weighted harmonic mean of the members'
step sums) in the next round's train config. That is all members need to read the
federation's control variate off the global model's move exactly
(:mod:`fractofl.core.learning.control_variates` has the arithmetic), so nothing
model-sized travels besides the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fractofl.core.wire.update_protocol import (
    EXAMPLES_KEY,
    SCAFFOLD_CORRECTED_KEY,
    SCAFFOLD_WEIGHT_KEY,
    STEP_SUM_KEY,
)
from fractofl.strategies.common import CommonStrategyArgs

log = logging.getLogger("fractofl")


class Scaffold(FedAvg):
    """FedAvg over step-normalized weights that tells members the last round's mean step
    sum (``step_sum``; None until a round has reported one: members then train that round
    uncorrected)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(weighted_by_key=SCAFFOLD_WEIGHT_KEY, **kwargs)  # type: ignore[arg-type]
        self.step_sum: float | None = None
        self._round = 0
        own = self.train_metrics_aggr_fn

        def remembering(records: list[RecordDict], weight_key: str) -> MetricRecord:
            # Weighted by n_i / S_i, the mean of the members' S_i is the step sum the
            # global model moved by per unit of the federation's mean gradient.
            aggregated = own(records, weight_key)
            value = aggregated.get(STEP_SUM_KEY)
            if isinstance(value, int | float) and math.isfinite(value) and value > 0:
                self.step_sum = float(value)
            corrected = sum(
                1
                for record in records
                for metrics in record.metric_records.values()
                if metrics.get(SCAFFOLD_CORRECTED_KEY) == 1
            )
            log.info(
                "round %d: SCAFFOLD: %d of %d updates trained with drift correction; mean step "
                "sum %.4g",
                self._round,
                corrected,
                len(records),
                self.step_sum or math.nan,
            )
            return aggregated

        self.train_metrics_aggr_fn = remembering

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's instructions, with the last round's mean step sum in their config."""
        self._round = server_round
        if self.step_sum is not None:
            config[STEP_SUM_KEY] = self.step_sum
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """FedAvg's, weighted by examples: evaluation replies carry no step sum."""
        own = self.weighted_by_key
        self.weighted_by_key = EXAMPLES_KEY
        try:
            return super().aggregate_evaluate(server_round, replies)
        finally:
            self.weighted_by_key = own


def build_scaffold(common: CommonStrategyArgs) -> Scaffold:
    """FedAvg with SCAFFOLD's drift correction on the members."""
    return Scaffold(**common.flower_kwargs())
