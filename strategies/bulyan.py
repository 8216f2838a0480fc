"""Bulyan (El Mhamdi et al., 2018, "The Hidden Vulnerability of Distributed Learning in
Byzantium", https://arxiv.org/abs/1802.07927): Multi-Krum selection, then a trimmed mean.
It needs at least 4f + 3 members for f Byzantine ones."""

from __future__ import annotations

from flwr.serverapp.strategy import Bulyan

from fractofl.strategies.common import CommonStrategyArgs


def build_bulyan(common: CommonStrategyArgs, num_malicious_nodes: int = 0) -> Bulyan:
    """Bulyan assuming ``num_malicious_nodes`` Byzantine members."""
    return Bulyan(**common.flower_kwargs(), num_malicious_nodes=num_malicious_nodes)
