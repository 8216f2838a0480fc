"""The ClientApp process Flower starts for every instruction, kept thin.

Flower 1.42's SuperNode starts one ``flwr-clientapp`` process per instruction; importing
Flower and torch in each took most of a member's CPU. ``fractofl member join`` therefore
runs a warm member beside the SuperNode (:mod:`fractofl.client.warm_member`, torch and the
installed fractofl imported once) and puts this launcher first on the SuperNode's ``PATH``
under Flower's name. The launcher imports nothing but the standard library: it hands its
command line to the warm member over a Unix socket in the member's folder (owner-only;
a socket another user owns, or others may use, is refused), which forks a ready process
for the instruction; the launcher then waits and exits with that process's exit code.

If the warm member is not there, the launcher itself takes the instruction and answers
it with an error that names the cause and the command that restarts it, so the
coordinator's round goes on with the other members.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

LAUNCHER_NAME = "flwr-clientapp"  # the name Flower's SuperNode starts ClientApps by
WARM_SOCKET = "warm.sock"
RESTART = "restart `fractofl member join` (it starts the warm member beside the SuperNode)"
EXIT_WARM_MEMBER_LOST = 75  # the warm member went away while the instruction ran
MAX_ANSWER_BYTES = 4096
CHILD_POLL_S = 0.2


class WarmMemberUnavailableError(RuntimeError):
    """No warm member can be reached at the socket, or it is not this user's."""


def check_socket(path: Path) -> None:
    """Refuse a socket that is missing, not a socket, owned by another user or open to
    others (WarmMemberUnavailableError saying which)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise WarmMemberUnavailableError(f"no warm member socket at {path}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise WarmMemberUnavailableError(f"{path} is not a socket")
    if info.st_uid != os.getuid():
        raise WarmMemberUnavailableError(
            f"{path} belongs to user id {info.st_uid}, not to this member's user ({os.getuid()})"
        )
    if info.st_mode & 0o077:
        raise WarmMemberUnavailableError(
            f"{path} may be used by other users (mode {stat.S_IMODE(info.st_mode):o})"
        )


def hand_over(path: Path, argv: list[str]) -> int:
    """Have the warm member at ``path`` run ``flwr-clientapp argv``; its exit code."""
    check_socket(path)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError as exc:
        connection.close()
        raise WarmMemberUnavailableError(
            f"the warm member at {path} does not answer: {exc}"
        ) from None
    with connection:
        connection.sendall(json.dumps({"argv": argv, "pid": os.getpid()}).encode() + b"\n")
        lines = connection.makefile("rb")
        started = _answer(lines.readline(MAX_ANSWER_BYTES + 1))  # {"child": pid} once forked
        ended = _answer(lines.readline(MAX_ANSWER_BYTES + 1))  # {"exit": code} when it ends
    if ended is not None:
        return int(ended["exit"])
    if started is not None:
        _wait_until_gone(int(started["child"]))  # it runs on without the warm member
    print(
        "fractofl: the warm member stopped while this instruction ran"
        + (" (its process ran on to the end)" if started is not None else "")
        + f"; {RESTART}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_WARM_MEMBER_LOST


def _answer(line: bytes) -> dict[str, int] | None:
    """One line of the warm member's answer, or None when it ended without one."""
    if not line.endswith(b"\n") or len(line) > MAX_ANSWER_BYTES:
        return None
    answer = json.loads(line)
    return answer if isinstance(answer, dict) else None


def _wait_until_gone(pid: int) -> None:
    """Wait for a process that is not ours to end (gone, or a zombie nobody reaps)."""
    stat_file = Path(f"/proc/{pid}/stat")
    while True:
        try:
            state = stat_file.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in {"Z", "X"}:
            return
        time.sleep(CHILD_POLL_S)


def main(path: str) -> None:
    """The launcher's entry point (``path``: the warm member's socket)."""
    try:
        code = hand_over(Path(path), sys.argv[1:])
    except WarmMemberUnavailableError as exc:
        from fractofl.client.code_gate import main as answer_with_error

        answer_with_error(f"member's warm process unavailable: {exc}; {RESTART}")
        return
    sys.exit(code)


def write_launcher(bin_dir: Path, warm_socket: Path | None) -> Path:
    """The ``flwr-clientapp`` launcher in ``bin_dir`` (owner-only), for the SuperNode's
    ``PATH``: it runs :func:`main` with this Python and the warm member's socket, or with
    ``warm_socket`` None the code gate in its own fresh process (``member join --cold``)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    bin_dir.chmod(0o700)
    launcher = bin_dir / LAUNCHER_NAME
    call = (
        f"from fractofl.client.warm_launcher import main\n\nmain({str(warm_socket)!r})\n"
        if warm_socket is not None
        else "from fractofl.client.code_gate import main\n\nmain()\n"
    )
    launcher.write_text(
        f"#!{sys.executable}\n"
        "# Written by `fractofl member join`: Flower's ClientApp, run by the warm member (or\n"
        "# cold) behind the member's code gate (fractofl.client.warm_launcher, code_gate).\n" + call
    )
    launcher.chmod(0o700)
    return launcher
