"""A member whose data folder is not where the run config says: the message names the
folder, the machine it runs on and what to do."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fractofl.client.member import MemberDataMissingError, member_data_dir
from fractofl.client.node_config import DATA_DIR_KEY, PARTITION_KEY
from fractofl.core.config.run_config import RunConfig
from fractofl.core.synth.dataset import member_dir


def test_a_simulated_member_without_its_folder_names_host_path_and_remedy(
    tmp_path: Path,
) -> None:
    # Prepare: a synthetic set's root that this machine does not have.
    cfg = RunConfig()
    cfg.data.root = str(tmp_path / "not-here")
    # Execute
    with pytest.raises(MemberDataMissingError) as raised:
        member_data_dir({PARTITION_KEY: 1}, cfg)
    # Assert
    message = str(raised.value)
    assert f"member data folder {member_dir(tmp_path / 'not-here', 1)} is not on " in message
    assert f"host {socket.gethostname()}" in message
    assert "every node needs every member's folder at this path" in message


def test_a_real_member_is_pointed_at_its_node_config(tmp_path: Path) -> None:
    with pytest.raises(MemberDataMissingError, match=r"--node-config 'data-dir="):
        member_data_dir({DATA_DIR_KEY: str(tmp_path / "gone")}, RunConfig())


def test_a_folder_that_is_there_is_returned(tmp_path: Path) -> None:
    assert member_data_dir({DATA_DIR_KEY: str(tmp_path)}, RunConfig()) == tmp_path
