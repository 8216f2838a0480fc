"""Which runs secure aggregation can serve, and how close its aggregate is to the mean."""

from __future__ import annotations

from typing import Any

import pytest

from fractofl.core.config.run_config import PrivacyConfig, from_nested
from fractofl.strategies.secure_aggregation import (
    SECAGG_STRATEGIES,
    SecureAggregationSettingsError,
    check_secagg_settings,
    secagg_error_bound,
)


def config(**sections: dict[str, Any]) -> Any:
    privacy = {"secure_aggregation": True, **sections.pop("privacy", {})}
    return from_nested({"privacy": privacy, **sections})


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"strategy": {"name": "krum"}}, "strategy='krum' needs them"),
        ({"strategy": {"name": "fedmedian"}}, "strategy='fedmedian' needs them"),
        ({"privacy": {"dp": True}}, "cannot be combined with privacy.dp=true"),
        ({"updates": {"compression": "int8"}}, "updates.compression=none, not 'int8'"),
        ({"federation": {"min_train_members": 1}}, "federation.min_train_members >= 2"),
        (
            {"privacy": {"secagg_reconstruction_threshold": 4}},
            "at most privacy.secagg_num_shares=3",
        ),
        ({"privacy": {"secagg_reconstruction_threshold": 1}}, "must be at least 2"),
        ({"privacy": {"secagg_num_shares": 2}}, "secagg_num_shares=2 must be at least 3"),
        ({"privacy": {"secagg_clipping_range": 0.0}}, "must both be > 0"),
        (
            {"privacy": {"secagg_quantization_range": 2**28}, "federation": {"members": 16}},
            "the masked sum overflows",
        ),
    ],
)
def test_settings_secure_aggregation_cannot_honour_are_refused(
    sections: dict[str, Any], match: str
) -> None:
    with pytest.raises(SecureAggregationSettingsError, match=match):
        check_secagg_settings(config(**sections))


@pytest.mark.parametrize("strategy", SECAGG_STRATEGIES)
def test_mean_based_strategies_are_accepted(strategy: str) -> None:
    check_secagg_settings(config(strategy={"name": strategy}))  # Assert: no error


def test_the_error_bound_shrinks_with_more_images_and_more_levels() -> None:
    # Prepare
    default = PrivacyConfig()
    finer = PrivacyConfig(secagg_quantization_range=2**24)
    # Execute
    small = secagg_error_bound(default, [40, 40, 40])
    large = secagg_error_bound(default, [400, 400, 400])
    # Assert: k x 2C/L x W / sum(n) = 3 x 16/2^22 x 1000/120
    assert small == pytest.approx(3 * 16 / 2**22 * 1000 / 120)
    assert large == pytest.approx(small / 10)
    assert secagg_error_bound(finer, [40, 40, 40]) == pytest.approx(small / 4)
    with pytest.raises(ValueError, match="must add up to > 0"):
        secagg_error_bound(default, [0, 0])
