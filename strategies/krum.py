"""Krum (Blanchard et al., 2017, "Machine Learning with Adversaries",
https://papers.nips.cc/paper/6617): the update closest to its n - f - 2 nearest others."""

from __future__ import annotations

from flwr.serverapp.strategy import Krum

from fractofl.strategies.common import CommonStrategyArgs


def build_krum(common: CommonStrategyArgs, num_malicious_nodes: int = 1) -> Krum:
    """Select one update, assuming up to ``num_malicious_nodes`` Byzantine members."""
    return Krum(**common.flower_kwargs(), num_malicious_nodes=num_malicious_nodes)
