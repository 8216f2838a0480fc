"""Strategy registry: aggregation strategies selected by name (``strategy=<name>``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from fractofl.strategies.fedavg import build_fedavg

MetricsAggregation = Callable[[list[RecordDict], str], MetricRecord]


class UnknownStrategyError(KeyError):
    """A strategy name or argument the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class CommonStrategyArgs:
    """What every strategy gets from the federation config and the coordinator."""

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    train_metrics_aggr_fn: MetricsAggregation
    evaluate_metrics_aggr_fn: MetricsAggregation


StrategyFactory = Callable[..., Strategy]

STRATEGY_REGISTRY: dict[str, StrategyFactory] = {
    "fedavg": build_fedavg,
}


def strategy_arguments(name: str) -> list[str]:
    """Names of the strategy-specific arguments (``strategy.args.*``)."""
    params = inspect.signature(_factory(name)).parameters
    return [p for p in params if p != "common"]


def build_strategy(name: str, common: CommonStrategyArgs, args: dict[str, Any]) -> Strategy:
    """Build the named strategy; unknown names or arguments fail with the valid ones."""
    valid = strategy_arguments(name)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise UnknownStrategyError(
            f"strategy {name!r} does not take {unknown} (strategy.args); "
            f"it takes: {', '.join(valid) or 'none'}"
        )
    return _factory(name)(common, **args)


def _factory(name: str) -> StrategyFactory:
    try:
        return STRATEGY_REGISTRY[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r} (strategy.name); "
            f"known strategies: {', '.join(sorted(STRATEGY_REGISTRY))}"
        ) from None
