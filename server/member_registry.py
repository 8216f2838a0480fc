"""The coordinator's register of member organisations (``fractofl member add|revoke|list``).

Flower knows SuperNodes by node id and public key only. The coordinator records, for each
member it registers, the organisation's name, the node id Flower gave it, the key's
``SHA256:`` fingerprint, its OpenSSH public key and the dates it was added and revoked,
in ``deployment.state_dir/members.json`` (written atomically, under a lock, so two
commands cannot lose each other's change). A revoked member stays in the file: Flower
refuses a key that was used before, and the register says so before asking Flower.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.core.files.atomic import atomic_write_bytes
from fractofl.core.trust.pki import public_key_fingerprint
from fractofl.server.superlink import (
    CoordinatorFiles,
    DeploymentError,
    control_host,
    is_listening,
    node_statuses,
    register_member,
    unregister_node,
)

REGISTRY_FILE = "members.json"
FORMAT_VERSION = 1
REVOKED = "revoked"
NEW_KEY_PAIR = (
    "Flower refuses a key that was used before, so the member needs a new key pair: they "
    "run `fractofl member keys --force` and send the new member.pub, which you add"
)


class MemberRegistryError(DeploymentError):
    """A member cannot be added or revoked as asked: a name or key already in use, a key
    that was revoked, an unknown name, an unreadable register."""


@dataclass(frozen=True)
class Member:
    """One member organisation's SuperNode registration."""

    name: str
    node_id: int
    fingerprint: str  # "SHA256:..." of the public key
    public_key: str  # the OpenSSH line (ecdsa-sha2-nistp384 AAAA...)
    added: str  # ISO 8601, UTC
    revoked: str = ""  # ISO 8601, UTC; "" while the member may connect

    @property
    def active(self) -> bool:
        return not self.revoked


def member_names(deployment: DeploymentConfig) -> dict[int, str]:
    """Node id -> registered organisation name, from the coordinator's register (empty in a
    simulation, or when the register cannot be read: names only decorate the logs)."""
    try:
        members = MemberRegistry(Path(deployment.state_dir)).members()
    except MemberRegistryError:
        return {}
    return {member.node_id: member.name for member in members}


class MemberRegistry:
    """``members.json`` in the coordinator's state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / REGISTRY_FILE

    def members(self) -> list[Member]:
        """Every member ever added, in the order they were added."""
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [Member(**entry) for entry in data["members"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise MemberRegistryError(
                f"the member register {self.path} is damaged ({exc}); restore it from a "
                "backup (`flwr supernode list` on the coordinator shows the node ids)"
            ) from None

    def find_active(self, name: str) -> Member:
        """The active member called ``name``, or an error listing the active names."""
        for member in self.members():
            if member.name == name and member.active:
                return member
        names = ", ".join(m.name for m in self.members() if m.active) or "none"
        raise MemberRegistryError(
            f"no active member called {name!r} in {self.path}; active members: {names}"
        )

    def check_new(self, name: str, fingerprint: str) -> None:
        """Refuse a name that is in use or a key that was registered before, saying why."""
        for member in self.members():
            if member.fingerprint == fingerprint and member.revoked:
                raise MemberRegistryError(
                    f"this key ({fingerprint}) belonged to {member.name}, revoked on "
                    f"{member.revoked[:10]}. {NEW_KEY_PAIR}"
                )
            if member.fingerprint == fingerprint:
                raise MemberRegistryError(
                    f"this key ({fingerprint}) is already registered for {member.name} "
                    f"(node id {member.node_id})"
                )
            if member.name == name and member.active:
                raise MemberRegistryError(
                    f"a member called {name!r} is already registered (node id "
                    f"{member.node_id}); revoke it first (`fractofl member revoke {name}`) "
                    "or choose another --name"
                )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the register's lock: one change at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.path.parent / f".{REGISTRY_FILE}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self, members: list[Member]) -> None:
        """Replace the register (call under :meth:`locked`)."""
        data = {"version": FORMAT_VERSION, "members": [dataclasses.asdict(m) for m in members]}
        atomic_write_bytes(self.path, (json.dumps(data, indent=2) + "\n").encode())


def add_member(
    files: CoordinatorFiles, cfg: DeploymentConfig, public_key: Path, name: str
) -> Member:
    """Register ``public_key`` with the SuperLink for the organisation ``name`` and record it."""
    name = name.strip()
    if not name:
        raise MemberRegistryError("--name is empty; give the member organisation's name")
    fingerprint = public_key_fingerprint(public_key)
    registry = MemberRegistry(files.state_dir)
    with registry.locked():
        registry.check_new(name, fingerprint)
        try:
            node_id = register_member(files, cfg, public_key, name)
        except DeploymentError as exc:
            if "already in use" in str(exc):
                raise MemberRegistryError(
                    f"the SuperLink already knows this key ({fingerprint}), though this "
                    f"register ({registry.path}) does not. {NEW_KEY_PAIR}"
                ) from None
            raise
        member = Member(name, node_id, fingerprint, _key_line(public_key), _now())
        registry.save([*registry.members(), member])
    return member


def revoke_member(files: CoordinatorFiles, cfg: DeploymentConfig, name: str) -> Member:
    """Unregister the member ``name`` from the SuperLink (its running SuperNode exits)
    and record when."""
    registry = MemberRegistry(files.state_dir)
    registry.find_active(name)  # an unknown name fails before anything is created
    with registry.locked():
        member = registry.find_active(name)
        try:
            unregister_node(files, cfg, member.node_id)
        except DeploymentError:
            # Already unregistered (by hand, or a revoke interrupted after Flower's part):
            # record it; anything else is a real failure.
            if node_statuses(files).get(member.node_id, "unregistered") != "unregistered":
                raise
        revoked = dataclasses.replace(member, revoked=_now())
        registry.save([revoked if m == member else m for m in registry.members()])
    return revoked


def member_statuses(files: CoordinatorFiles, cfg: DeploymentConfig) -> list[tuple[Member, str]]:
    """Each member with its status: ``revoked``, or the SuperLink's (``registered``,
    ``online``, ``offline``); ``unknown`` for all when the SuperLink does not answer."""
    members = MemberRegistry(files.state_dir).members()
    if not is_listening(control_host(cfg), cfg.superlink_port):
        return [(m, REVOKED if m.revoked else "unknown") for m in members]
    nodes = node_statuses(files)
    return [(m, REVOKED if m.revoked else nodes.get(m.node_id, "missing")) for m in members]


def _key_line(public_key: Path) -> str:
    return " ".join(public_key.read_text().split()[:2])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
