"""Strategy registry: aggregation strategies selected by name (``strategy=<name>``).

Every strategy is one of Flower's, configured in its own module (FedAdam and FedYogi share
one builder, :mod:`fractofl.strategies.fedopt`; FedAvgM steps from the global model, see
:mod:`fractofl.strategies.fedavgm`), and wrapped in the
:class:`~fractofl.strategies.guard.UpdateGuard` that decodes and screens member updates.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from flwr.serverapp.strategy import Strategy

from fractofl.core.wire.compression import CompressionSpec
from fractofl.strategies.bulyan import build_bulyan
from fractofl.strategies.common import CommonStrategyArgs
from fractofl.strategies.fedadagrad import build_fedadagrad
from fractofl.strategies.fedavg import build_fedavg
from fractofl.strategies.fedavgm import build_fedavgm
from fractofl.strategies.fedmedian import build_fedmedian
from fractofl.strategies.fedopt import build_fedadam, build_fedyogi
from fractofl.strategies.fedprox import build_fedprox
from fractofl.strategies.fedtrimmedavg import build_fedtrimmedavg
from fractofl.strategies.guard import ScreenListener, UpdateGuard
from fractofl.strategies.krum import build_krum
from fractofl.strategies.multikrum import build_multikrum

__all__ = [
    "STRATEGY_REGISTRY",
    "CommonStrategyArgs",
    "build_strategy",
    "check_strategy_values",
    "strategy_arguments",
]


class UnknownStrategyError(KeyError):
    """A strategy name or argument the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


StrategyFactory = Callable[..., Strategy]

STRATEGY_REGISTRY: dict[str, StrategyFactory] = {
    "fedavg": build_fedavg,
    "fedavgm": build_fedavgm,
    "fedprox": build_fedprox,
    "fedadam": build_fedadam,
    "fedyogi": build_fedyogi,
    "fedadagrad": build_fedadagrad,
    "fedmedian": build_fedmedian,
    "fedtrimmedavg": build_fedtrimmedavg,
    "krum": build_krum,
    "multikrum": build_multikrum,
    "bulyan": build_bulyan,
}


def strategy_arguments(name: str) -> list[str]:
    """Names of the strategy-specific arguments (``strategy.args.*``)."""
    params = inspect.signature(_factory(name)).parameters
    return [p for p in params if p != "common"]


def check_strategy_values(name: str, args: dict[str, Any]) -> None:
    """Build the named strategy once with ``args`` so that a value it refuses (a
    ``ValueError`` naming ``strategy.args.<key>``) stops the run before anything starts."""
    from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

    placeholder = CommonStrategyArgs(
        1.0, 1.0, 1, 1, 1, aggregate_metricrecords, aggregate_metricrecords
    )
    _factory(name)(placeholder, **args)


def build_strategy(
    name: str,
    common: CommonStrategyArgs,
    args: dict[str, Any],
    compression: CompressionSpec,
    max_norm_multiple: float,
    listener: ScreenListener | None = None,
    statistics_keys: frozenset[str] = frozenset(),
) -> UpdateGuard:
    """The named strategy behind the update guard; unknown names or arguments fail.

    ``statistics_keys`` names the model's running statistics (BatchNorm buffers), which
    server optimisers leave to plain averaging.
    """
    valid = strategy_arguments(name)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise UnknownStrategyError(
            f"strategy {name!r} does not take {unknown} (strategy.args); "
            f"it takes: {', '.join(valid) or 'none'}"
        )
    inner = _factory(name)(common, **args)
    return UpdateGuard(inner, compression, max_norm_multiple, listener, statistics_keys)


def _factory(name: str) -> StrategyFactory:
    try:
        return STRATEGY_REGISTRY[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r} (strategy.name); "
            f"known strategies: {', '.join(sorted(STRATEGY_REGISTRY))}"
        ) from None
