"""FedProx (Li et al., 2020, https://arxiv.org/abs/1812.06127).

Aggregation is FedAvg's; the difference is on the member: Flower's FedProx sends
``proximal-mu`` in the train config, and the member adds ``mu/2 * ||w - w_global||^2`` to
its loss (``fractofl.core.learning.training.train``), which keeps local models near the global one
on non-IID data.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedProx

from fractofl.strategies.common import CommonStrategyArgs


def build_fedprox(common: CommonStrategyArgs, proximal_mu: float = 0.001) -> FedProx:
    """FedAvg with the proximal term ``proximal_mu`` applied by the members."""
    if proximal_mu < 0:
        raise ValueError(f"strategy.args.proximal_mu={proximal_mu} must be >= 0")
    return FedProx(**common.flower_kwargs(), proximal_mu=proximal_mu)
