"""Trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning",
https://arxiv.org/abs/1803.01498): coordinate-wise mean without the extremes."""

from __future__ import annotations

from flwr.serverapp.strategy import FedTrimmedAvg

from fractofl.strategies.common import CommonStrategyArgs


def build_fedtrimmedavg(common: CommonStrategyArgs, beta: float = 0.2) -> FedTrimmedAvg:
    """Drop the fraction ``beta`` of largest and of smallest values per coordinate."""
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"strategy.args.beta={beta} must be in [0, 0.5)")
    return FedTrimmedAvg(**common.flower_kwargs(), beta=beta)
