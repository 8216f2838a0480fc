"""Where the SuperLink keeps Flower's state (``deployment.superlink_store``): SQLite in the
state folder by default, Flower's in-memory store for a plain-text test federation only.
(A real run on the in-memory store: tests/federation/test_no_images_leave.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from fractofl.cli.coordinator_cmd import ready_message
from fractofl.cli.main import main
from fractofl.core.config.run_config import DeploymentConfig
from fractofl.server.superlink import (
    IN_MEMORY_STORE,
    CoordinatorFiles,
    DeploymentError,
    superlink_command,
)


def _database(command: list[str]) -> str:
    return command[command.index("--database") + 1]


def test_the_default_store_is_the_database_file_in_the_state_folder(tmp_path: Path) -> None:
    # Prepare
    cfg = DeploymentConfig(state_dir=str(tmp_path / "coordinator"))
    files = CoordinatorFiles.from_config(cfg)
    # Execute
    command = superlink_command(cfg, files, insecure=True)
    # Assert
    assert _database(command) == str(tmp_path / "coordinator" / "superlink.db")


def test_a_plain_text_federation_may_keep_flowers_state_in_memory(tmp_path: Path) -> None:
    # Prepare
    cfg = DeploymentConfig(state_dir=str(tmp_path), superlink_store="memory")
    # Execute
    command = superlink_command(cfg, CoordinatorFiles.from_config(cfg), insecure=True)
    # Assert
    assert _database(command) == IN_MEMORY_STORE and "--insecure" in command


@pytest.mark.parametrize(
    ("store", "insecure", "said"),
    [
        ("memory", False, "would lose the members' registrations"),
        ("sqlite", True, "deployment.superlink_store='sqlite': choose file or memory"),
    ],
)
def test_a_store_that_cannot_be_used_is_refused_with_what_to_do(
    tmp_path: Path, store: str, insecure: bool, said: str
) -> None:
    # Prepare
    cfg = DeploymentConfig(state_dir=str(tmp_path), superlink_store=store)
    # Execute
    with pytest.raises(DeploymentError) as refused:
        superlink_command(cfg, CoordinatorFiles.from_config(cfg), insecure)
    # Assert
    assert said in str(refused.value)


def test_up_with_tls_and_the_memory_store_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    monkeypatch.chdir(tmp_path)
    # Execute
    code = main(["coordinator", "up", "deployment.superlink_store=memory"])
    err = capsys.readouterr().err
    # Assert: one clear line, nothing started or written
    assert code == 1 and "Traceback" not in err
    assert err.startswith("fractofl: error:") and "deployment.superlink_store=file" in err
    assert not (tmp_path / "coordinator").exists()


def test_up_says_where_flowers_state_is(tmp_path: Path) -> None:
    # Prepare
    on_file = DeploymentConfig(state_dir=str(tmp_path))
    in_memory = DeploymentConfig(state_dir=str(tmp_path), superlink_store="memory")
    # Execute
    said = {
        cfg.superlink_store: ready_message(cfg, CoordinatorFiles.from_config(cfg), True, False)
        for cfg in (on_file, in_memory)
    }
    # Assert
    assert f"(plain text; state in {tmp_path})" in said["file"]
    assert f"(plain text; Flower's state in memory, fractofl's in {tmp_path})" in said["memory"]
