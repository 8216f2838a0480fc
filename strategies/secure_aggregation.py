"""Which runs secure aggregation (``privacy.secure_aggregation=true``) can serve.

Under Flower's SecAgg+ (Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", CCS 2020) the coordinator learns only the example-weighted sum of the members'
updates. Everything that needs one member's update on its own cannot work then: robust
aggregates (median, trimmed mean, Krum, Bulyan), the update guard's norm screening, the
check that a member clipped under differential privacy, and sparse or int8 compression
(masks are added to every value of a dense vector). Mean-based strategies, server
optimisers included, need only the mean and work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from fractofl.core.config.run_config import PrivacyConfig, RunConfig
from fractofl.strategies.aggregation_mode import MEAN_STRATEGIES

SECAGG_STRATEGIES = MEAN_STRATEGIES
"""Strategies that need only the weighted mean of the updates."""
MODULUS_RANGE = 2**32
"""Flower's largest modulus: masked sums are computed modulo this."""


class SecureAggregationSettingsError(ValueError):
    """``privacy.secagg_*`` settings, or a combination, that SecAgg+ cannot serve."""


def check_secagg_settings(cfg: RunConfig) -> None:
    """Refuse what SecAgg+ cannot do, naming the setting at fault and what to change."""
    privacy, strategy = cfg.privacy, cfg.strategy.name
    if strategy not in SECAGG_STRATEGIES:
        raise SecureAggregationSettingsError(
            f"privacy.secure_aggregation=true hides individual updates, but strategy="
            f"{strategy!r} needs them (a robust aggregate compares members' updates); choose "
            f"one of {', '.join(SECAGG_STRATEGIES)} or set privacy.secure_aggregation=false"
        )
    if privacy.dp:
        raise SecureAggregationSettingsError(
            "privacy.secure_aggregation=true cannot be combined with privacy.dp=true: the "
            "coordinator must see each update to check that its member clipped it; choose one"
        )
    if cfg.updates.compression != "none":
        raise SecureAggregationSettingsError(
            f"privacy.secure_aggregation=true needs updates.compression=none, not "
            f"{cfg.updates.compression!r}: masked updates are dense vectors"
        )
    if cfg.federation.min_train_members < 2:
        raise SecureAggregationSettingsError(
            f"privacy.secure_aggregation=true needs federation.min_train_members >= 2 "
            f"(got {cfg.federation.min_train_members}): a sum of one update is that update"
        )
    threshold, shares = privacy.secagg_reconstruction_threshold, privacy.secagg_num_shares
    if shares < 3:
        raise SecureAggregationSettingsError(
            f"privacy.secagg_num_shares={shares} must be at least 3 (Flower's SecAgg+); "
            "rounds with fewer members share every secret with all of them"
        )
    if not 2 <= threshold <= shares:
        raise SecureAggregationSettingsError(
            f"privacy.secagg_reconstruction_threshold={threshold} must be at least 2 and at "
            f"most privacy.secagg_num_shares={shares}"
        )
    if privacy.secagg_clipping_range <= 0 or privacy.secagg_max_weight <= 0:
        raise SecureAggregationSettingsError(
            f"privacy.secagg_clipping_range={privacy.secagg_clipping_range} and "
            f"privacy.secagg_max_weight={privacy.secagg_max_weight} must both be > 0"
        )
    levels = privacy.secagg_quantization_range
    if levels < 2 or levels * cfg.federation.members >= MODULUS_RANGE:
        raise SecureAggregationSettingsError(
            f"privacy.secagg_quantization_range={levels} times federation.members="
            f"{cfg.federation.members} must stay below 2^32, or the masked sum overflows; "
            "lower the quantisation range"
        )


def secagg_error_bound(privacy: PrivacyConfig, examples: Sequence[int]) -> float:
    """The largest difference, per value, between SecAgg+'s aggregate and the exact
    example-weighted mean of the same updates (none clipped) from members with
    ``examples`` training images.

    Every member scales its update by ``n_i / W`` (``W = secagg_max_weight``) and rounds it
    stochastically to one of ``L = secagg_quantization_range`` levels spanning
    ``2 C`` (``C = secagg_clipping_range``): an error below one level, ``2 C / L``, each.
    The coordinator divides the sum by ``sum(n_i) / W``, so the mean is off by less than
    ``k 2 C W / (L sum(n_i))`` for ``k`` members. Larger members, a smaller ``W`` or
    ``C``, or more levels make it smaller.
    """
    total = sum(examples)
    if total <= 0:
        raise ValueError(f"members' training images {list(examples)} must add up to > 0")
    level = 2 * privacy.secagg_clipping_range / privacy.secagg_quantization_range
    return len(examples) * level * privacy.secagg_max_weight / total
