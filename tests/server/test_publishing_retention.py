"""The coordinator's publisher applies registry retention after each round it publishes,
and clears what crashed publishes left when it opens the registry."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import ArrayRecord

from fractofl.core.config.run_config import (
    ModelConfig,
    RegistryConfig,
    RetentionConfig,
    RunConfig,
    RunConfigError,
)
from fractofl.core.model.factory import model_for
from fractofl.core.trust.registry import PUBLISH_PREFIX, ModelRegistry
from fractofl.core.trust.retention import STALE_PUBLISH_AGE_S
from fractofl.core.trust.signing import load_public_key
from fractofl.server.publishing import RoundPublisher
from fractofl.server.recorder import RoundRow

# Coordinator test macro-F1 of rounds 1..5: round 2's model is the best.
MACRO_F1 = (0.30, 0.80, 0.50, 0.60, 0.70)


def _config(tmp_path: Path, retention: RetentionConfig) -> RunConfig:
    registry = RegistryConfig(
        root=str(tmp_path / "registry"),
        private_key=str(tmp_path / "keys" / "coordinator.key"),
        public_key=str(tmp_path / "keys" / "coordinator.pub"),
        trusted_public_key=str(tmp_path / "keys" / "coordinator.pub"),
        passphrase_env="FRACTOFL_TEST_UNSET_PASSPHRASE",
        retention=retention,
    )
    model = ModelConfig(name="small_cnn", image_size=32, args={"width": 8})
    return replace(RunConfig(), registry=registry, model=model)


def _row(server_round: int) -> RoundRow:
    f1 = MACRO_F1[server_round - 1]
    return RoundRow(server_round, 2, 0.5, f1, f1, 1 - f1, f1, 0, 0, 1000.0, 1.0)


def test_each_publish_prunes_to_the_newest_and_the_best(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a crashed publish's staging folder, untouched for longer than the limit
    cfg = _config(tmp_path, RetentionConfig(keep_last=2))
    crashed = tmp_path / "registry" / f"{PUBLISH_PREFIX}a8f3"
    crashed.mkdir(parents=True)
    past = time.time() - STALE_PUBLISH_AGE_S - 1
    os.utime(crashed, (past, past))
    arrays = ArrayRecord(model_for(cfg).state_dict())
    caplog.set_level(logging.INFO, logger="fractofl")
    # Execute: five rounds published
    publisher = RoundPublisher(cfg, "run-publish")
    for server_round in range(1, 6):
        publisher.publish(server_round, arrays, _row(server_round))
    # Assert: the newest 2 and the best remain, and verify
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.version_numbers() == [2, 4, 5]
    trusted = load_public_key(tmp_path / "keys" / "coordinator.pub")
    assert [registry.verify(n, trusted).round for n in (2, 4, 5)] == [2, 4, 5]
    assert not crashed.exists()
    messages = [r.getMessage() for r in caplog.records]
    assert any("removed 1 folder(s) left by crashed" in m and crashed.name in m for m in messages)
    removals = [m for m in messages if m.startswith("registry retention: removed")]
    assert removals == [
        # after round 3: v2 is the best and, with v3, the newest
        "registry retention: removed v000001 (0.1 MB freed); kept 2 version(s)",
        # after round 5: v4 and v5 the newest, v2 the best
        "registry retention: removed v000003 (0.1 MB freed); kept 3 version(s)",
    ]


def test_pruning_after_publish_can_be_switched_off(tmp_path: Path) -> None:
    cfg = _config(tmp_path, RetentionConfig(keep_last=1, prune_after_publish=False))
    arrays = ArrayRecord(model_for(cfg).state_dict())
    publisher = RoundPublisher(cfg, "run-keep")
    for server_round in range(1, 4):
        publisher.publish(server_round, arrays, _row(server_round))
    assert ModelRegistry(tmp_path / "registry").version_numbers() == [1, 2, 3]


def test_an_unknown_metric_is_logged_and_the_run_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(tmp_path, RetentionConfig(keep_last=1, best_metric="val_f1"))
    arrays = ArrayRecord(model_for(cfg).state_dict())
    publisher = RoundPublisher(cfg, "run-metric")
    caplog.set_level(logging.WARNING, logger="fractofl")
    for server_round in range(1, 3):
        publisher.publish(server_round, arrays, _row(server_round))
    assert ModelRegistry(tmp_path / "registry").version_numbers() == [1, 2]
    assert "registry retention skipped, nothing removed: registry.retention.best_metric=" in (
        caplog.text
    )


def test_a_bad_setting_fails_before_anything_is_published(tmp_path: Path) -> None:
    cfg = _config(tmp_path, RetentionConfig(keep_last=-1))
    with pytest.raises(RunConfigError, match=r"registry\.retention\.keep_last=-1"):
        RoundPublisher(cfg, "run-bad")
    assert not (tmp_path / "registry").exists()
    assert not (tmp_path / "keys").exists()
