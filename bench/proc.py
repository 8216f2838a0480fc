"""Running the benchmark's subprocesses: a fixed environment, a log file, a time limit."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    """How a subprocess ended."""

    command: tuple[str, ...]
    returncode: int
    wall_s: float
    log_path: Path
    shown_env: tuple[tuple[str, str], ...] = ()

    @property
    def shell(self) -> str:
        """The command as one would type it (with the variables it was given)."""
        prefix = [f"{key}={shlex.quote(value)}" for key, value in self.shown_env]
        return " ".join([*prefix, shlex.join(self.command)])

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the log (where a traceback ends)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, offline for Flower, unbuffered, plus ``extra``."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def run_logged(
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 3600.0,
    cwd: Path | None = None,
    shown_env: Mapping[str, str] | None = None,
) -> Finished:
    """Run ``command`` with stdout and stderr written to ``log_path``; never raises on failure.

    A command that runs past ``timeout_s`` is killed and reported with return code -9.
    ``shown_env`` names the variables to show with the command in reports.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("w") as log:
        try:
            code = subprocess.run(
                list(command),
                env=dict(env or bench_env()),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                cwd=cwd,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -9
    shown = tuple((shown_env or {}).items())
    return Finished(tuple(command), code, time.monotonic() - started, log_path, shown)
