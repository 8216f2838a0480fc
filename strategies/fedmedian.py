"""FedMedian (Yin et al., 2018, "Byzantine-Robust Distributed Learning",
https://arxiv.org/abs/1803.01498): coordinate-wise median of member weights."""

from __future__ import annotations

from flwr.serverapp.strategy import FedMedian

from fractofl.strategies.common import CommonStrategyArgs


def build_fedmedian(common: CommonStrategyArgs) -> FedMedian:
    """Coordinate-wise median; robust to a minority of arbitrary updates."""
    return FedMedian(**common.flower_kwargs())
