"""``fractofl coordinator up``: the SuperLink and its front as child processes.

The SuperLink starts first, on its private loopback port; once it listens, nginx starts
on the public address. Both run until one of them exits (then the other is stopped and
the command exits with an error), SIGTERM, or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.server.front import (
    FrontFiles,
    check_front_settings,
    check_upstream_certificate,
    find_nginx,
    front_config,
    front_local_host,
    nginx_command,
    write_front_config,
)
from fractofl.server.superlink import (
    CoordinatorFiles,
    DeploymentError,
    control_host,
    is_listening,
    superlink_command,
    write_connection,
)

POLL_S = 0.5
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class Service:
    """One child process of the coordinator and where it listens once ready."""

    name: str
    command: list[str]
    host: str
    port: int


def plan_services(
    cfg: DeploymentConfig, files: CoordinatorFiles, insecure: bool, with_front: bool
) -> list[Service]:
    """Check everything the coordinator needs and write the files its processes read
    (the front's nginx.conf, the coordinator's Flower CLI connection); what to start, in
    order. Raises before anything starts."""
    superlink = Service(
        "SuperLink",
        superlink_command(cfg, files, insecure),
        control_host(cfg),
        cfg.superlink_port,
    )
    services = [superlink]
    if with_front:
        check_front_settings(cfg)
        if not insecure:
            check_upstream_certificate(files)
        nginx = find_nginx(cfg)
        front = FrontFiles.of(files)
        front_host = front_local_host(cfg)
        services.append(Service("front", nginx_command(nginx, front), front_host, cfg.front_port))
    for service in services:
        if is_listening(service.host, service.port):
            raise DeploymentError(
                f"{service.host}:{service.port}, the {service.name}'s port, is in use: is "
                "`fractofl coordinator up` already running? (deployment.superlink_port, "
                "front_port)"
            )
    files.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if with_front:
        write_front_config(front_config(cfg, files, insecure, os.geteuid() == 0), front, nginx)
    write_connection(files, cfg, insecure)
    return services


def run_services(
    services: list[Service], env: dict[str, str], start_timeout_s: float, ready: str
) -> int:
    """Start ``services`` one after the other (each once the previous one listens), print
    ``ready``, and wait until one exits or the command is stopped; its exit code (1 when a
    service stopped by itself with 0)."""
    started: list[tuple[Service, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for service in services:
            process = subprocess.Popen(service.command, env=env)
            started.append((service, process))
            if not _wait_listening(service, process, start_timeout_s, lambda: stopping):
                return 0 if stopping else _stopped(started, service, process)
        print(ready, flush=True)
        while not stopping:
            for service, process in started:
                if process.poll() is not None:
                    return _stopped(started, service, process)
            time.sleep(POLL_S)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_all(started)
        signal.signal(signal.SIGTERM, previous)


def _wait_listening(
    service: Service,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    stopping: Callable[[], bool],
) -> bool:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and not stopping():
        if is_listening(service.host, service.port):
            return True
        if time.monotonic() > deadline:
            print(
                f"fractofl: error: the {service.name} does not listen on "
                f"{service.host}:{service.port} after {timeout_s:.0f} s "
                "(deployment.connect_timeout_s)",
                file=sys.stderr,
                flush=True,
            )
            return False
        time.sleep(POLL_S)
    return False


def _stopped(
    started: list[tuple[Service, subprocess.Popen[bytes]]],
    service: Service,
    process: subprocess.Popen[bytes],
) -> int:
    code = process.poll()
    if code is None:
        return 1
    others = [s.name for s, _ in started if s is not service]
    print(
        f"fractofl: error: the {service.name} exited (code {code})"
        + (f"; stopping the {', '.join(others)}" if others else ""),
        file=sys.stderr,
        flush=True,
    )
    return code or 1


def _stop_all(started: list[tuple[Service, subprocess.Popen[bytes]]]) -> None:
    """Stop the front before the SuperLink: SIGTERM, then SIGKILL after a grace period."""
    for _, process in reversed(started):
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for _, process in reversed(started):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        if process.poll() is None:
            process.kill()
            process.wait()
