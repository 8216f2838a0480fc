"""When members score a round's model in the next round's training reply
(``federation.evaluate_with_training``) and when they get an evaluation exchange of its own."""

from __future__ import annotations

import dataclasses

import pytest

from fractofl.core.config.run_config import RunConfig
from fractofl.server.coordinator import evaluates_with_training


def _config(**federation: object) -> RunConfig:
    cfg = RunConfig()
    cfg.federation = dataclasses.replace(cfg.federation, **federation)
    return cfg


def test_by_default_members_score_the_model_with_their_training() -> None:
    assert RunConfig().federation.evaluate_with_training
    assert evaluates_with_training(RunConfig())
    assert not evaluates_with_training(_config(evaluate_with_training=False))


@pytest.mark.parametrize(
    ("federation", "secure", "reason"),
    [
        ({}, True, "privacy.secure_aggregation is on"),
        ({"fraction_train": 0.5}, False, "federation.fraction_train=0.5, fraction_evaluate=1.0"),
        ({"fraction_evaluate": 0.5}, False, "fraction_evaluate=0.5"),
    ],
)
def test_secure_aggregation_and_sampled_members_get_an_evaluation_exchange_and_the_log_says_why(
    federation: dict[str, object], secure: bool, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(**federation)
    cfg.privacy = dataclasses.replace(cfg.privacy, secure_aggregation=secure)
    caplog.set_level("INFO", logger="fractofl")
    assert not evaluates_with_training(cfg)
    assert "members evaluate in an exchange of their own after each round" in caplog.text
    assert reason in caplog.text
