"""The flat run config that Flower carries to the apps."""

from __future__ import annotations

import pytest

from fractofl.core.config.run_config import (
    RunConfig,
    RunConfigError,
    config_digest,
    from_flat,
    to_flat,
)


def test_flat_round_trip_keeps_every_value() -> None:
    # Prepare
    cfg = RunConfig()
    cfg.model.args = {"width": 8, "dropout": 0.1}
    cfg.data.classes = ["a", "b", "c"]
    cfg.federation.rounds = 9
    # Execute
    flat = to_flat(cfg)
    back = from_flat(flat)
    # Assert
    assert back == cfg
    assert flat["data.classes"] == "a,b,c"
    assert flat["model.args.width"] == 8
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())


def test_unknown_key_names_valid_keys() -> None:
    with pytest.raises(RunConfigError, match=r"federation\.roundz.*federation\.rounds"):
        from_flat({"federation.roundz": 3})


def test_wrong_type_is_refused() -> None:
    with pytest.raises(RunConfigError, match=r"federation\.rounds='many'"):
        from_flat({"federation.rounds": "many"})


def test_missing_keys_keep_defaults_and_ints_become_floats() -> None:
    cfg = from_flat({"data.alpha": 1})
    assert cfg.data.alpha == 1.0 and isinstance(cfg.data.alpha, float)
    assert cfg.federation == RunConfig().federation


def test_digest_changes_with_any_value() -> None:
    a, b = RunConfig(), RunConfig()
    b.train.lr = 0.01
    assert config_digest(a) == config_digest(RunConfig())
    assert config_digest(a) != config_digest(b)


def test_digest_leaves_out_how_the_coordinator_holds_updates_and_where_ray_runs() -> None:
    # Members send the digest as a metric, and it orders the aggregation: two runs that
    # differ only in these settings must aggregate the same updates in the same order.
    a, b = RunConfig(), RunConfig()
    b.updates.aggregation, b.updates.spill_dir, b.updates.spill_min_free_mb = "gathered", "/x", 1
    b.federation.ray_address = "10.0.0.5:6379"
    assert config_digest(a) == config_digest(b)
    b.updates.compression = "int8"
    assert config_digest(a) != config_digest(b)
