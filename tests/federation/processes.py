"""Processes of a real federation started by tests and benchmarks: each in a session of its
own, so that stopping it stops its children (SuperNodes start ClientApp processes).

Imports only the standard library: bench/deployment.py loads this file by path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (held open together while they are picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def fractofl(*args: str) -> list[str]:
    """The installed ``fractofl`` command line."""
    return [str(Path(sys.executable).with_name("fractofl")), *args]


@dataclass
class Processes:
    """The processes a test started; :meth:`stop_all` kills their process groups."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        """Start ``command`` in its own session, output to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        """SIGTERM every group, then SIGKILL what is left."""
        for process in self.started:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
