"""Whether the coordinator streams a round's updates or gathers them (``updates.aggregation``).

Streamed, each reply is screened as it arrives, its bytes wait on disk (see
:mod:`fractofl.strategies.spill`) and the accepted updates are folded into the mean one at
a time, so the coordinator's memory is a small multiple of one model whatever the number
of members. That is exact only for the strategies whose aggregate is the weighted mean of
the updates (or an optimiser step from it); the robust ones compare all updates at once
and keep them in memory, and under secure aggregation the members' masked vectors are
exchanged by SecAgg+'s own protocol.
"""

from __future__ import annotations

from fractofl.core.config.run_config import RunConfig

MEAN_STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm")
"""Strategies that need only the weighted mean of the updates."""
AGGREGATION_MODES = ("auto", "streamed", "gathered")


class AggregationSettingsError(ValueError):
    """``updates.aggregation`` asks for streaming where it cannot be exact."""


def streams_updates(cfg: RunConfig) -> bool:
    """Whether this run streams its updates: ``auto`` streams wherever it is exact;
    ``streamed`` where it cannot be is refused, naming the setting and what to change."""
    mode = cfg.updates.aggregation
    if mode not in AGGREGATION_MODES:
        raise AggregationSettingsError(
            f"updates.aggregation={mode!r}; valid: {', '.join(AGGREGATION_MODES)}"
        )
    possible = cfg.strategy.name in MEAN_STRATEGIES and not cfg.privacy.secure_aggregation
    if mode == "streamed" and not possible:
        why = (
            "secure aggregation exchanges masked vectors by its own protocol"
            if cfg.privacy.secure_aggregation
            else f"strategy={cfg.strategy.name!r} compares all of a round's updates at once"
        )
        raise AggregationSettingsError(
            f"updates.aggregation=streamed is exact only for {', '.join(MEAN_STRATEGIES)} "
            f"without secure aggregation, and {why}; set updates.aggregation=auto or gathered"
        )
    return mode == "streamed" or (mode == "auto" and possible)
