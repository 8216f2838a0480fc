"""A member's side of a real federation: its SuperNode (``fractofl member join``).

The SuperNode connects out to the coordinator's SuperLink, through the coordinator's front
(which lets only the Fleet API through), over TLS verified against the consortium CA,
authenticates with the member's EC P-384 key, and runs the same ClientApp
as the simulation on the member's own image folder, passed as node config
``data-dir``. Nothing listens for the outside: its local port serves only its own
ClientApp processes on loopback. Those are forked by the member's warm process
(:mod:`fractofl.client.warm_member`, torch and fractofl imported once) and pass the
member's code gate (:mod:`fractofl.client.code_gate`): a run's code runs only if the
member approved it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fractofl.client.node_config import (
    APPROVED_CODE_KEY,
    AUDIT_LOG_KEY,
    CACHE_DIR_KEY,
    DATA_DIR_KEY,
    POLICY_KEY,
    REFERENCE_DIR_KEY,
)
from fractofl.client.supernode_main import (
    FLOWER_TASK_POLL_S,
    POLL_FLAG,
    TASK_POLL_FLAG,
    check_poll_s,
    check_task_poll_s,
)
from fractofl.client.warm_launcher import LAUNCHER_NAME, WARM_SOCKET, write_launcher
from fractofl.core.processes.flower_executables import flower_tool

SUPERNODE_MAIN = "fractofl.client.supernode_main"
GATE_BIN = "bin"  # deployment.member_dir/bin: the flwr-clientapp launcher
MEMBER_CACHE_DIR = "cache"  # deployment.member_dir/cache: images prepared once (owner-only)
WARM_DIR = "warm"  # deployment.member_dir/warm: the warm member's socket (owner-only)
MAX_SOCKET_PATH = 107  # bytes in a Unix socket's path on Linux (sun_path, less its NUL)
WARM_START_TIMEOUT_S = 60.0
WARM_STOP_TIMEOUT_S = 10.0
SOCKET_POLL_S = 0.05


class MemberSetupError(RuntimeError):
    """``member join`` cannot start: a missing file or folder, a bad address."""


@dataclass(frozen=True)
class JoinSettings:
    """What a member's SuperNode needs."""

    superlink: str
    data_dir: Path
    private_key: Path | None
    ca_cert: Path | None
    local_port: int
    audit_log: Path | None = None
    """The member's audit log (``deployment.member_dir/audit.log``), in its node config."""
    policy: Path | None = None
    """The member's privacy policy (``deployment.member_dir/policy.yaml``), if it wrote one."""
    approved_code: Path | None = None
    """The code digests the member approved (``deployment.member_dir/approved-code.txt``,
    :mod:`fractofl.client.code_gate`), which need not exist yet."""
    cache_dir: Path | None = None
    """Where the member's images are prepared once (``deployment.member_dir/cache``)."""
    reference_dir: Path | None = None
    """The member's copy of the consortium's reference set (``--reference``), if any."""
    poll_s: float | None = None
    """How often the idle SuperNode asks for work (``deployment.member_poll_s``,
    :mod:`fractofl.client.supernode_main`); None runs Flower's SuperNode as it is."""
    task_poll_s: float = FLOWER_TASK_POLL_S
    """How often its SuperExec asks it for a ClientApp to start
    (``deployment.member_task_poll_s``; Flower's own by default); used with ``poll_s``."""

    def check(self) -> None:
        """Refuse to start with a missing file or a malformed address, naming it."""
        host, _, port = self.superlink.rpartition(":")
        if not host or not port.isdigit():
            raise MemberSetupError(
                f"--superlink {self.superlink!r} is not HOST:PORT (the coordinator's address, "
                "e.g. coordinator.example.org:9092)"
            )
        if self.reference_dir is not None and not self.reference_dir.is_dir():
            raise MemberSetupError(
                f"--reference {self.reference_dir} is not a folder; point it at your copy of "
                "the consortium's reference set (one sub-folder per class)"
            )
        if not self.data_dir.is_dir():
            raise MemberSetupError(
                f"--data {self.data_dir} is not a folder; point it at the member's images "
                "(one sub-folder per class; `fractofl data check DIR` checks it)"
            )
        for flag, path in (("--key", self.private_key), ("--ca", self.ca_cert)):
            if path is not None and not path.is_file():
                raise MemberSetupError(f"{flag} {path} does not exist")


def why_it_stopped(code: int, asked_to_stop: bool, superlink: str, coordinator: str) -> str | None:
    """What a member should know when its SuperNode stopped without being asked to, or
    None when it was asked to (Ctrl-C, SIGTERM).

    Flower 1.42's SuperNode stops by itself, gracefully (exit code 0, "SuperNode terminated
    gracefully"), only when the SuperLink answers 401 to its key: the coordinator
    unregistered the node. It exits 1 on errors, e.g. ``Failed to activate SuperNode``
    (code 305 in its log) for a key the coordinator never registered or revoked.
    """
    if asked_to_stop:
        return None
    ask = f"the operator of {coordinator} (the coordinator at {superlink})"
    if code == 0:
        return (
            "the coordinator no longer accepts this member's key: it unregistered this node "
            f"(`fractofl member revoke`). Ask {ask} why. To join again you need a new key "
            "pair (`fractofl member keys --force`), whose member.pub they add"
        )
    return (
        f"the SuperNode stopped with an error (exit code {code}; its log above says which). "
        "If it says `Failed to activate SuperNode`, the coordinator does not know this key: "
        f"it was never registered, or it was revoked. Send member.pub to {ask}, who "
        "registers it with `fractofl member add`"
    )


def node_config(settings: JoinSettings) -> str:
    """The SuperNode's ``--node-config``: the member's images, audit log, policy,
    approved code, image cache and reference set."""
    pairs = [f'{DATA_DIR_KEY}="{settings.data_dir.resolve()}"']
    if settings.audit_log is not None:
        pairs.append(f'{AUDIT_LOG_KEY}="{settings.audit_log.resolve()}"')
    if settings.policy is not None:
        pairs.append(f'{POLICY_KEY}="{settings.policy.resolve()}"')
    if settings.approved_code is not None:
        pairs.append(f'{APPROVED_CODE_KEY}="{settings.approved_code.resolve()}"')
    if settings.cache_dir is not None:
        pairs.append(f'{CACHE_DIR_KEY}="{settings.cache_dir.resolve()}"')
    if settings.reference_dir is not None:
        pairs.append(f'{REFERENCE_DIR_KEY}="{settings.reference_dir.resolve()}"')
    return " ".join(pairs)


def supernode_command(settings: JoinSettings, insecure: bool) -> list[str]:
    """``flower-supernode`` for ``settings`` (through :mod:`fractofl.client.supernode_main`
    when ``settings.poll_s`` is set); with ``insecure``, plain text and no key."""
    settings.check()
    if not insecure and (settings.private_key is None or settings.ca_cert is None):
        raise MemberSetupError(
            "a TLS federation needs --ca (the consortium's ca.crt) and --key (this member's "
            "private key, from `fractofl member keys`); --insecure only for a test federation"
        )
    if settings.poll_s is None:
        supernode = [flower_tool("flower-supernode")]
    else:
        poll_s = check_poll_s(settings.poll_s)
        task_poll_s = check_task_poll_s(settings.task_poll_s)
        supernode = [sys.executable, "-m", SUPERNODE_MAIN, POLL_FLAG, f"{poll_s!r}"]
        supernode += [TASK_POLL_FLAG, f"{task_poll_s!r}", "--"]
    command = [
        *supernode,
        "--superlink",
        settings.superlink,
        "--port",
        str(settings.local_port),
        "--node-config",
        node_config(settings),
    ]
    if insecure:
        return [*command, "--insecure"]
    assert settings.ca_cert is not None and settings.private_key is not None
    return [
        *command,
        "--root-certificates",
        str(settings.ca_cert.resolve()),
        "--auth-supernode-private-key",
        str(settings.private_key.resolve()),
    ]


def warm_socket(member_dir: Path) -> Path:
    """Where the member's warm process listens (``member_dir/warm/warm.sock``)."""
    path = member_dir.resolve() / WARM_DIR / WARM_SOCKET
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise MemberSetupError(
            f"the warm member's socket path {path} is longer than a Unix socket allows "
            f"({MAX_SOCKET_PATH} bytes): use a shorter deployment.member_dir"
        )
    return path


def with_code_gate(env: dict[str, str], member_dir: Path, warm: bool = True) -> dict[str, str]:
    """``env`` for the SuperNode with the ``flwr-clientapp`` launcher (written now in
    ``member_dir/bin``; it hands each instruction to the warm member, or with ``warm``
    False runs it in its own fresh process, behind the code gate either way) first on its
    ``PATH``, where the SuperNode looks for the ClientApp it starts per instruction;
    checked, so that no other one is found."""
    launcher = write_launcher(member_dir / GATE_BIN, warm_socket(member_dir) if warm else None)
    path = f"{launcher.parent}{os.pathsep}{env.get('PATH', '')}"
    found = shutil.which(LAUNCHER_NAME, path=path)
    if found is None or Path(found).resolve() != launcher.resolve():
        raise MemberSetupError(
            f"the SuperNode would start {found or 'no'} {LAUNCHER_NAME}, not the code gate's "
            f"{launcher}: check that {launcher.parent} is on a file system that allows "
            "executables"
        )
    return {**env, "PATH": path}


@dataclass
class WarmProcess:
    """The member's running warm process, watched: if it stops by itself, the member is
    told at once (its instructions are answered with an error until a restart)."""

    process: subprocess.Popen[bytes]
    stopping: threading.Event = field(default_factory=threading.Event)

    def watch(self) -> None:
        """Report, from a daemon thread, an exit nobody asked for."""

        def wait() -> None:
            code = self.process.wait()
            if not self.stopping.is_set():
                print(
                    f"fractofl: the warm member stopped (exit {code}): this member answers "
                    f"every instruction with an error until `fractofl member join` is "
                    "restarted",
                    file=sys.stderr,
                    flush=True,
                )

        threading.Thread(target=wait, name="warm-member-watch", daemon=True).start()

    def stop(self) -> None:
        """Stop the warm process (and, with it, the ClientApps it still runs)."""
        self.stopping.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=WARM_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_warm_member(
    member_dir: Path, env: dict[str, str], timeout_s: float = WARM_START_TIMEOUT_S
) -> WarmProcess:
    """Start the member's warm process, wait until its socket is there
    (MemberSetupError with its exit code if it stops first), and watch it."""
    path = warm_socket(member_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "fractofl.client.warm_member", "--socket", str(path)], env=env
    )
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise MemberSetupError(
                f"the warm member stopped as it started (exit {process.returncode}); its "
                "message is above"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise MemberSetupError(f"the warm member did not open {path} in {timeout_s:.0f} s")
        time.sleep(SOCKET_POLL_S)
    warm = WarmProcess(process)
    warm.watch()
    return warm
