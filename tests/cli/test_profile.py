"""Deployment settings typed once: the coordinator's profile and a member's join settings."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from fractofl.cli.config import load_run_config
from fractofl.cli.member_cmd import JOIN_SETTINGS, join_settings
from fractofl.cli.profile import (
    COORDINATOR_PROFILE,
    ProfileError,
    apply_coordinator_profile,
    save_coordinator_profile,
)
from fractofl.client.supernode import MemberSetupError
from fractofl.core.config.run_config import DeploymentConfig
from tests.conftest import run_fractofl


def _saved(state_dir: Path) -> None:
    save_coordinator_profile(
        DeploymentConfig(state_dir=str(state_dir), front_port=9444, superlink_port=9555)
    )


def test_later_commands_start_from_the_saved_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: what `coordinator up` saved
    _saved(tmp_path / "coordinator")
    overrides = [f"deployment.state_dir={tmp_path / 'coordinator'}"]
    # Execute
    with caplog.at_level(logging.INFO, logger="fractofl"):
        cfg = apply_coordinator_profile(load_run_config(overrides), overrides)
    # Assert
    assert (cfg.deployment.front_port, cfg.deployment.superlink_port) == (9444, 9555)
    assert "front_port=9444, superlink_port=9555" in caplog.text


def test_the_command_line_wins_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    _saved(tmp_path / "coordinator")
    overrides = [f"deployment.state_dir={tmp_path / 'coordinator'}", "deployment.front_port=9600"]
    # Execute
    with caplog.at_level(logging.INFO, logger="fractofl"):
        cfg = apply_coordinator_profile(load_run_config(overrides), overrides)
    # Assert
    assert (cfg.deployment.front_port, cfg.deployment.superlink_port) == (9600, 9555)
    assert "deployment.front_port=9600 from the command line, not 9444 as saved" in caplog.text


def test_a_damaged_profile_is_named(tmp_path: Path) -> None:
    # Prepare
    state_dir = tmp_path / "coordinator"
    state_dir.mkdir()
    (state_dir / COORDINATOR_PROFILE).write_text("front_port: [not, a, port]\n")
    overrides = [f"deployment.state_dir={state_dir}"]
    # Execute / Assert
    with pytest.raises(ProfileError, match=r"deployment\.yaml: .*fix or delete the file"):
        apply_coordinator_profile(load_run_config(overrides), overrides)


def test_a_coordinator_command_reads_the_profile_from_the_default_folder(tmp_path: Path) -> None:
    # Prepare: the profile in ./coordinator, where every command looks by default
    _saved(tmp_path / "coordinator")
    # Execute: no deployment.* override at all
    result = run_fractofl("coordinator", "front-config", cwd=tmp_path)
    # Assert: nginx's configuration for the saved ports
    assert result.returncode == 0, result.stderr
    assert "listen 0.0.0.0:9444 ssl" in result.stdout
    assert "127.0.0.1:9555" in result.stdout
    assert "deployment settings from" in result.stderr


def _join_args(**given: object) -> argparse.Namespace:
    values = dict.fromkeys(JOIN_SETTINGS)
    return argparse.Namespace(**{**values, **given})


def test_member_join_settings_are_saved_once_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a first join with the address and the folder
    from fractofl.cli.profile import save_member_profile

    reference = tmp_path / "reference"
    first = join_settings(
        _join_args(superlink="coord:9092", data=tmp_path, reference=reference), tmp_path
    )
    save_member_profile(tmp_path, first)
    # Execute: a second join with nothing, a third with another port
    with caplog.at_level(logging.INFO, logger="fractofl"):
        second = join_settings(_join_args(), tmp_path)
        third = join_settings(_join_args(port=9100), tmp_path)
    # Assert
    assert second == first and second["superlink"] == "coord:9092"
    assert third["port"] == 9100 and third["data"] == str(tmp_path)
    assert third["reference"] == str(reference)  # the consortium's reference set, kept
    assert "--port 9100 from the command line, not 9094 as saved" in caplog.text
    assert "member join settings from" in caplog.text


def test_the_first_member_join_needs_the_address_and_the_folder(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(MemberSetupError, match="needs --superlink and --data"):
        join_settings(_join_args(), tmp_path)
