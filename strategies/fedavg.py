"""FedAvg (McMahan et al., 2017, https://arxiv.org/abs/1602.05629), as Flower ships it."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from fractofl.strategies.common import CommonStrategyArgs


def build_fedavg(common: CommonStrategyArgs) -> FedAvg:
    """Weighted mean of member weights (weights: ``num-examples``)."""
    return FedAvg(**common.flower_kwargs())
