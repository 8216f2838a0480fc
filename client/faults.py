"""Simulated member faults, for dropout experiments and tests only.

The first ``federation.faulty_members`` simulated members after the attackers (partition
ids ``attackers .. attackers + faulty_members - 1``) fail in the rounds listed in
``federation.fault_rounds`` (all rounds when empty): ``raise`` makes training raise, as
a crashing member would; ``hang`` makes it sleep past ``federation.round_timeout``, as a
member that went silent would. A real member (no partition id) is never affected.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fractofl.client.node_config import PARTITION_KEY
from fractofl.core.config.run_config import FederationConfig

FAULTS = ("none", "raise", "hang")
HANG_BEYOND_TIMEOUT_S = 5.0  # how far past the round timeout a hanging member sleeps


class SimulatedMemberFault(RuntimeError):
    """Raised by a simulated member configured to crash."""


def fault_rounds(fed: FederationConfig) -> set[int]:
    """The rounds ``federation.fault_rounds`` lists (empty: every round)."""
    try:
        return {int(part) for part in fed.fault_rounds.split(",") if part.strip()}
    except ValueError:
        raise ValueError(
            f"federation.fault_rounds={fed.fault_rounds!r}: use comma-separated round "
            "numbers, e.g. '2,3', or '' for every round"
        ) from None


def is_faulty(fed: FederationConfig, node_config: Mapping[str, object], server_round: int) -> bool:
    """Whether this simulated member fails in ``server_round``."""
    partition = node_config.get(PARTITION_KEY)
    if fed.fault == "none" or partition is None:
        return False
    first = fed.attackers
    if not first <= int(str(partition)) < first + fed.faulty_members:
        return False
    rounds = fault_rounds(fed)
    return not rounds or server_round in rounds


def inject_fault(
    fed: FederationConfig, node_config: Mapping[str, object], server_round: int
) -> None:
    """Fail as configured, or return at once."""
    if not is_faulty(fed, node_config, server_round):
        return
    partition = node_config.get(PARTITION_KEY)
    if fed.fault == "raise":
        raise SimulatedMemberFault(
            f"simulated crash of member partition {partition} in round {server_round}"
        )
    if fed.fault == "hang":
        time.sleep(fed.round_timeout + HANG_BEYOND_TIMEOUT_S)
        return
    raise ValueError(f"federation.fault={fed.fault!r}; valid: {', '.join(FAULTS)}")
