"""Where the SuperLink keeps Flower's state (``deployment.superlink_store``): SQLite in the
state folder by default with the messages in flight in memory, all of it in SQLite, or
Flower's in-memory store for a plain-text test federation only. (Real runs: the default in
tests/federation/test_real_federation.py and test_front.py, a restart included; the
in-memory store in tests/federation/test_no_images_leave.py.)"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import flwr.superlink.main as flower_superlink_main
import pytest
from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
from flwr.superlink.config_loader import get_federation_manager

from fractofl.cli.coordinator_cmd import ready_message
from fractofl.cli.main import main
from fractofl.core.config.run_config import DeploymentConfig
from fractofl.server.superlink import (
    CoordinatorFiles,
    DeploymentError,
    superlink_command,
)
from fractofl.server.superlink_main import objects_in_memory


def _database(command: list[str]) -> str:
    return command[command.index("--database") + 1]


def test_the_default_store_is_the_database_file_in_the_state_folder(tmp_path: Path) -> None:
    # Prepare
    cfg = DeploymentConfig(state_dir=str(tmp_path / "coordinator"))
    files = CoordinatorFiles.from_config(cfg)
    # Execute
    command = superlink_command(cfg, files, insecure=True)
    # Assert: Flower's SuperLink, through the entry point that keeps messages in memory
    assert _database(command) == str(tmp_path / "coordinator" / "superlink.db")
    assert command[:4] == [sys.executable, "-m", "fractofl.server.superlink_main", "--"]


def test_file_and_messages_runs_flowers_own_superlink_on_the_same_file(tmp_path: Path) -> None:
    # Prepare
    cfg = DeploymentConfig(state_dir=str(tmp_path), superlink_store="file_and_messages")
    # Execute
    command = superlink_command(cfg, CoordinatorFiles.from_config(cfg), insecure=True)
    # Assert
    assert Path(command[0]).name == "flower-superlink"
    assert _database(command) == str(tmp_path / "superlink.db")


def _patched_superlink_main(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Flower's SuperLink module with the entry point's change, undone after the test."""
    monkeypatch.setattr(
        flower_superlink_main,
        "get_objectstore_linkstate_factories",
        flower_superlink_main.get_objectstore_linkstate_factories,
    )
    objects_in_memory(flower_superlink_main)
    objects_in_memory(flower_superlink_main)  # twice changes nothing more
    return flower_superlink_main


def test_the_entry_point_keeps_state_in_the_file_and_objects_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: Flower's SuperLink builds its stores as the entry point has it do
    app_main = _patched_superlink_main(monkeypatch)
    database = str(tmp_path / "superlink.db")
    federation = get_federation_manager()
    objects, states = app_main.get_objectstore_linkstate_factories(database, federation)
    # Execute: a member registers; then the SuperLink restarts on the same file
    state = states.state()
    node_id = state.create_node("coordinator", "coordinator", b"org0-key", 30.0)
    _, restarted = app_main.get_objectstore_linkstate_factories(database, federation)
    # Assert: the state is Flower's SQLite state, sharing Flower's in-memory object store;
    # the registration survives the restart
    assert isinstance(state, SqlLinkState)
    assert isinstance(objects.store(), InMemoryObjectStore)
    assert state.object_store is objects.store()
    assert restarted.state().get_node_id_by_public_key(b"org0-key") == node_id


def test_the_in_memory_store_is_left_as_flower_builds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    app_main = _patched_superlink_main(monkeypatch)
    # Execute
    objects, states = app_main.get_objectstore_linkstate_factories(
        FLWR_IN_MEMORY_DB_NAME, get_federation_manager()
    )
    # Assert
    assert isinstance(objects.store(), InMemoryObjectStore)
    assert not isinstance(states.state(), SqlLinkState)


def test_a_flower_without_the_factories_is_refused_naming_the_pinned_version() -> None:
    # Prepare: a module standing for another Flower's SuperLink
    other = ModuleType("flwr.superlink.main")
    # Execute
    with pytest.raises(RuntimeError) as refused:
        objects_in_memory(other)
    # Assert
    assert "flwr 1.42.0" in str(refused.value)


@pytest.mark.parametrize(
    ("store", "insecure", "said"),
    [
        ("memory", False, "would lose the members' registrations"),
        (
            "sqlite",
            True,
            "deployment.superlink_store='sqlite': choose file, file_and_messages, memory",
        ),
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
