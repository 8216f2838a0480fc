"""Multi-Krum (Blanchard et al., 2017, "Machine Learning with Adversaries",
https://papers.nips.cc/paper/6617): average of the m best-scored updates by Krum."""

from __future__ import annotations

from flwr.serverapp.strategy import MultiKrum

from fractofl.strategies.common import CommonStrategyArgs


def build_multikrum(
    common: CommonStrategyArgs, num_malicious_nodes: int = 1, num_nodes_to_select: int = 3
) -> MultiKrum:
    """Average ``num_nodes_to_select`` updates, assuming ``num_malicious_nodes`` Byzantine."""
    return MultiKrum(
        **common.flower_kwargs(),
        num_malicious_nodes=num_malicious_nodes,
        num_nodes_to_select=num_nodes_to_select,
    )
