"""The warm member: one long-lived process beside the member's SuperNode that runs its
ClientApps without starting Python, Flower and torch again for every instruction.

``fractofl member join`` starts it before the SuperNode. It imports Flower's ClientApp
runtime, torch and the installed fractofl ClientApp once, then listens on a Unix socket
in the member's folder (the folder and socket owner-only; a connection from another user
is refused by its peer credentials). For each instruction the thin launcher
(:mod:`fractofl.client.warm_launcher`) sends Flower's command line; the warm member forks
a child that already has everything imported, and the child runs Flower's
``flwr-clientapp`` behind the member's code gate (:mod:`fractofl.client.code_gate`)
exactly as a fresh process would: it pulls the instruction, checks the bundle, runs the
ClientApp, pushes the reply and exits. The exit code goes back to the launcher. A
launcher that goes away (Flower stopped the task) takes its child with it.

The loop is single-threaded (a selector), so forking never copies a lock held by another
thread; torch is imported but runs nothing here, so its thread pools start in the
children, and CUDA, which does not survive a fork, is initialised in each child.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

log = logging.getLogger("fractofl")

POLL_S = 0.2  # how often finished children are collected
REQUEST_TIMEOUT_S = 5.0  # a launcher sends its command line as soon as it connects
MAX_REQUEST_BYTES = 65536
BACKLOG = 64


class WarmMemberError(RuntimeError):
    """The warm member cannot start (its socket's folder is not safe, or in use)."""


def warm_up() -> None:
    """Import what every ClientApp needs: Flower's runtime, torch, fractofl's ClientApp,
    and torchvision's networks. A ClientApp of a ResNet run would otherwise import
    torchvision (and ``torch._dynamo`` with it) again for every instruction, 1.3 s of CPU
    each here; the warm member pays it once, about 160 MB of its memory that its children
    share."""
    import flwr.supernode.cli.flwr_clientapp
    import flwr.supernode.runtime.run_clientapp  # noqa: F401
    import torch  # noqa: F401

    import fractofl.client.app
    import fractofl.client.code_gate  # noqa: F401
    from fractofl.core.model.architectures import torchvision_models

    torchvision_models()


def listen(path: Path) -> socket.socket:
    """A listening socket at ``path``, in an owner-only folder, readable by its owner
    only; a stale socket from a warm member that died is replaced, a live one refused."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise WarmMemberError(
            f"{folder} belongs to another user: choose a member folder of your own"
        )
    folder.chmod(0o700)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left by a warm member that died
        else:
            raise WarmMemberError(
                f"a warm member already listens at {path}: another `member join` runs with "
                "this member folder; stop it first"
            )
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    path.chmod(0o600)
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return listener


def peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (Linux)."""
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


def read_request(connection: socket.socket) -> list[str]:
    """The launcher's Flower command line; ValueError for anything else."""
    connection.settimeout(REQUEST_TIMEOUT_S)
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(MAX_REQUEST_BYTES)
        if not chunk or len(data) + len(chunk) > MAX_REQUEST_BYTES:
            raise ValueError("the launcher sent no complete request")
        data += chunk
    argv = json.loads(data)["argv"]
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        raise ValueError("the request's argv is not a list of strings")
    return argv


def run_child(argv: list[str]) -> int:
    """In the forked child: Flower's ``flwr-clientapp argv`` behind the code gate; the
    exit code it ends with."""
    from fractofl.client.code_gate import main
    from fractofl.client.warm_launcher import LAUNCHER_NAME

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.argv = [LAUNCHER_NAME, *argv]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


@dataclass
class _Task:
    """A forked child and the launcher waiting for it."""

    pid: int
    connection: socket.socket


class WarmMember:
    """The warm member's loop: accept launchers, fork a child for each, report exits."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.tasks: dict[int, _Task] = {}  # by the launcher connection's file descriptor
        self.stopping = False

    def serve(self) -> None:
        """Run until SIGTERM or SIGINT, or until the process that started it is gone;
        then stop the children still running."""

        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        parent = os.getppid()
        try:
            while not self.stopping and os.getppid() == parent:  # `member join` still there
                for key, _ in self.selector.select(timeout=POLL_S):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        self._launcher_gone(key.fd)
                self._collect()
        finally:
            for task in self.tasks.values():
                _kill(task.pid)
            self.listener.close()

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except BlockingIOError:
            return
        uid = peer_uid(connection)
        if uid != os.getuid():
            log.warning("warm member: refused a connection from user id %d", uid)
            connection.close()
            return
        try:
            argv = read_request(connection)
        except (OSError, ValueError) as exc:
            log.warning("warm member: refused a request: %s", exc)
            connection.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: nothing of the loop, Flower's ClientApp only
            code = 1
            try:
                self.selector.close()
                self.listener.close()
                for task in self.tasks.values():
                    task.connection.close()
                connection.close()
                code = run_child(argv)
            finally:  # never return into the loop, whatever happened
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        try:
            connection.sendall(json.dumps({"child": pid}).encode() + b"\n")
        except OSError:
            _kill(pid)  # the launcher is gone already: nobody waits for this instruction
        connection.setblocking(False)
        self.tasks[connection.fileno()] = _Task(pid, connection)
        self.selector.register(connection, selectors.EVENT_READ)

    def _launcher_gone(self, fd: int) -> None:
        """A launcher's connection became readable: it closed (Flower stopped the task)."""
        task = self.tasks.get(fd)
        if task is None:
            return
        try:
            if task.connection.recv(1):
                return  # a launcher sends nothing more; ignore stray bytes
        except BlockingIOError:
            return
        except OSError:
            pass
        _kill(task.pid)

    def _collect(self) -> None:
        """Report every finished child's exit code to its launcher."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            for fd, task in list(self.tasks.items()):
                if task.pid == pid:
                    self.selector.unregister(task.connection)
                    try:
                        task.connection.setblocking(True)
                        task.connection.sendall(json.dumps({"exit": code}).encode() + b"\n")
                    except OSError:
                        pass  # the launcher is gone; nobody to tell
                    task.connection.close()
                    del self.tasks[fd]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """``python -m fractofl.client.warm_member --socket PATH`` (started by ``member join``)."""
    from fractofl.client.code_gate import log_to_stderr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="where to listen")
    args = parser.parse_args(argv)
    log_to_stderr()
    try:
        listener = listen(args.socket)
    except WarmMemberError as exc:
        print(f"fractofl: {exc}", file=sys.stderr)
        return 1
    try:
        warm_up()
        log.info("warm member ready at %s (pid %d)", args.socket, os.getpid())
        WarmMember(listener).serve()
    finally:
        args.socket.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
