"""What every strategy gets from the federation config and the coordinator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import MetricRecord, RecordDict

MetricsAggregation = Callable[[list[RecordDict], str], MetricRecord]


@dataclass(frozen=True)
class CommonStrategyArgs:
    """Sampling and metric-aggregation settings shared by all of Flower's strategies."""

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    train_metrics_aggr_fn: MetricsAggregation
    evaluate_metrics_aggr_fn: MetricsAggregation

    def flower_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any ``flwr.serverapp.strategy`` constructor."""
        return {
            "fraction_train": self.fraction_train,
            "fraction_evaluate": self.fraction_evaluate,
            "min_train_nodes": self.min_train_nodes,
            "min_evaluate_nodes": self.min_evaluate_nodes,
            "min_available_nodes": self.min_available_nodes,
            "train_metrics_aggr_fn": self.train_metrics_aggr_fn,
            "evaluate_metrics_aggr_fn": self.evaluate_metrics_aggr_fn,
        }
