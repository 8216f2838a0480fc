"""A member's side of a real federation: its SuperNode (``fractofl member join``).

The SuperNode connects out to the coordinator's SuperLink, through the coordinator's front
(which lets only the Fleet API through), over TLS verified against the consortium CA,
authenticates with the member's EC P-384 key, and runs the same ClientApp
as the simulation on the member's own image folder, passed as node config
``data-dir``. Nothing listens for the outside: its local port serves only its own
ClientApp processes on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fractofl.client.node_config import AUDIT_LOG_KEY, DATA_DIR_KEY, POLICY_KEY
from fractofl.core.processes.flower_executables import flower_tool


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

    def check(self) -> None:
        """Refuse to start with a missing file or a malformed address, naming it."""
        host, _, port = self.superlink.rpartition(":")
        if not host or not port.isdigit():
            raise MemberSetupError(
                f"--superlink {self.superlink!r} is not HOST:PORT (the coordinator's address, "
                "e.g. coordinator.example.org:9092)"
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
    """The SuperNode's ``--node-config``: the member's images, audit log and policy."""
    pairs = [f'{DATA_DIR_KEY}="{settings.data_dir.resolve()}"']
    if settings.audit_log is not None:
        pairs.append(f'{AUDIT_LOG_KEY}="{settings.audit_log.resolve()}"')
    if settings.policy is not None:
        pairs.append(f'{POLICY_KEY}="{settings.policy.resolve()}"')
    return " ".join(pairs)


def supernode_command(settings: JoinSettings, insecure: bool) -> list[str]:
    """``flower-supernode`` for ``settings``; with ``insecure``, plain text and no key."""
    settings.check()
    if not insecure and (settings.private_key is None or settings.ca_cert is None):
        raise MemberSetupError(
            "a TLS federation needs --ca (the consortium's ca.crt) and --key (this member's "
            "private key, from `fractofl member keys`); --insecure only for a test federation"
        )
    command = [
        flower_tool("flower-supernode"),
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
