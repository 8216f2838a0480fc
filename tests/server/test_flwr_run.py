"""The same apps under Flower's own launcher: ``flwr run .`` with a local SuperLink."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import load_public_key

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def flwr_home(tmp_path: Path) -> Iterator[Path]:
    """A private FLWR_HOME; every process started under it is stopped afterwards."""
    home = tmp_path / "flwr-home"
    yield home
    for process in psutil.process_iter(["cmdline"]):
        if any(str(home) in part for part in process.info["cmdline"] or []):
            for child in process.children(recursive=True):
                child.kill()
            process.kill()


def test_flwr_run_uses_the_pyproject_apps_and_run_config(
    easy_dataset: Path, tmp_path: Path, flwr_home: Path
) -> None:
    # Prepare: Flower's local SuperLink on free ports, offline, in a private home.
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    runs = tmp_path / "runs"
    run_config = " ".join(
        [
            f'data.root="{easy_dataset}"',
            f'output.root="{runs}"',
            'output.name="via-flwr-run"',
            f'registry.root="{tmp_path / "registry"}"',
            f'registry.private_key="{tmp_path / "keys" / "coordinator.key"}"',
            f'registry.public_key="{tmp_path / "keys" / "coordinator.pub"}"',
            "federation.rounds=1",
            "train.local_epochs=1",
            "model.image_size=32",
            "model.args.width=16",
        ]
    )
    # Execute
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("flwr")),
            "run",
            str(REPO),
            "--stream",
            "--federation-config",
            "num-supernodes=2",
            "--run-config",
            run_config,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        cwd=tmp_path,
    )
    # Assert: the ServerApp wrote its run folder from the overridden run config.
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    run_dir = runs / "via-flwr-run"
    assert (run_dir / "model.pt").is_file(), output[-3000:]
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["round"] for r in rows] == ["0", "1"]
    assert rows[1]["members_answered"] == "2" and rows[1]["config_mismatches"] == "0"
    # ... and published round 1's model, signed with the key it created.
    trusted = load_public_key(tmp_path / "keys" / "coordinator.pub")
    registry = ModelRegistry(tmp_path / "registry")
    assert [m.round for m in registry.versions()] == [1]
    registry.verify(1, trusted)
