"""Flower's executables run as child processes by the coordinator's and members' commands.

Imports no flwr: it only finds the executables of this environment, gives them an offline
environment with a private ``FLWR_HOME``, and runs one in the foreground.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # Each run's app dependencies are this environment's: offline, `uv sync` would fail.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


class FlowerToolError(RuntimeError):
    """A Flower executable is missing from this environment."""


def flower_tool(name: str) -> str:
    """A Flower executable of this environment (``flwr``, ``flower-superlink``, ...)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise FlowerToolError(
            f"{name} is not installed next to {sys.executable}; reinstall fractofl"
        )
    return found


def flower_env(flwr_home: Path) -> dict[str, str]:
    """The environment for Flower's processes and CLI: a private home, offline, and this
    environment's executables first (the SuperLink starts ``flower-superexec`` by name)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(flwr_home), "PATH": path}


@dataclass(frozen=True)
class Exited:
    """How a foreground process ended: its exit code, and whether we asked it to stop
    (SIGTERM or Ctrl-C to this process) or it stopped by itself."""

    code: int
    asked_to_stop: bool


def run_in_foreground(command: list[str], env: dict[str, str]) -> Exited:
    """Run ``command`` until it exits; SIGTERM or Ctrl-C stop it."""
    process = subprocess.Popen(command, env=env)
    asked = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal asked
        asked = True
        process.terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        asked = True
        process.terminate()
        code = process.wait()
    return Exited(code, asked)
