"""FedAvg (McMahan et al., 2017, https://arxiv.org/abs/1602.05629), as Flower ships it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.serverapp.strategy import FedAvg

if TYPE_CHECKING:
    from fractofl.strategies.registry import CommonStrategyArgs


def build_fedavg(common: CommonStrategyArgs) -> FedAvg:
    """Flower's FedAvg, weighting replies by their ``num-examples``."""
    return FedAvg(
        fraction_train=common.fraction_train,
        fraction_evaluate=common.fraction_evaluate,
        min_train_nodes=common.min_train_nodes,
        min_evaluate_nodes=common.min_evaluate_nodes,
        min_available_nodes=common.min_available_nodes,
        train_metrics_aggr_fn=common.train_metrics_aggr_fn,
        evaluate_metrics_aggr_fn=common.evaluate_metrics_aggr_fn,
    )
