"""``fractofl member join | add | revoke | list``: a member's SuperNode, and the coordinator's
register of members."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fractofl.cli.config import compose_config, to_run_config

if TYPE_CHECKING:
    from fractofl.server.member_registry import Member

DEFAULT_LOCAL_PORT = 9094
"""Flower's default for the SuperNode's own loopback port; members on one host need
different ones (``--port``)."""


def register_actions(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``member join``, ``add``, ``revoke`` and ``list`` to the ``member`` group."""
    join = actions.add_parser(
        "join",
        help="run this member's SuperNode: train with the federation on local images",
        description=(
            "Connect to the coordinator's SuperLink through its front over TLS (verified "
            "with the consortium's ca.crt), authenticate with this member's private key, "
            "and train the federation's model on the images in --data whenever the "
            "coordinator runs a round. Runs in "
            "the foreground (Ctrl-C leaves). Images never leave this machine: only model "
            "updates and metrics are sent."
        ),
    )
    join.add_argument(
        "--superlink",
        required=True,
        help="the coordinator's front, HOST:PORT (its deployment.front_port)",
    )
    join.add_argument("--data", type=Path, required=True, help="this member's image folder")
    join.add_argument(
        "--key",
        type=Path,
        help="private key from `fractofl member keys` (default: deployment.member_dir/member.key)",
    )
    join.add_argument(
        "--ca", type=Path, help="the consortium's CA certificate (default: member_dir/ca.crt)"
    )
    join.add_argument(
        "--port",
        type=int,
        default=DEFAULT_LOCAL_PORT,
        help=f"the SuperNode's own loopback port (default {DEFAULT_LOCAL_PORT})",
    )
    join.add_argument(
        "--insecure", action="store_true", help="plain text, no key (a test federation only)"
    )
    join.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.member_dir=...)")
    join.set_defaults(handler=_join, cfg=False)
    add = actions.add_parser(
        "add",
        help="(coordinator) register a member's public key with the SuperLink",
        description=(
            "Register a member's SuperNode public key (member.pub, from `fractofl member "
            "keys`) with the running SuperLink, so that the member may connect, and record "
            "the organisation's name, node id, key fingerprint and date in "
            "state_dir/members.json. Prints the node id."
        ),
    )
    add.add_argument("public_key", type=Path, help="the member's member.pub")
    add.add_argument("--name", required=True, help="the member organisation's name")
    add.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    add.set_defaults(handler=_add, cfg=False)
    revoke = actions.add_parser(
        "revoke",
        help="(coordinator) unregister a member: its SuperNode exits and its key is refused",
        description=(
            "Unregister the member's SuperNode from the SuperLink: its running SuperNode exits "
            "and its key is refused from now on. To return, the member needs a new key pair "
            "(Flower refuses a key that was used before)."
        ),
    )
    revoke.add_argument("name", help="the member organisation's name (as given to `member add`)")
    revoke.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    revoke.set_defaults(handler=_revoke, cfg=False)
    listing = actions.add_parser(
        "list",
        help="(coordinator) the registered members and their status",
        description=(
            "Every member in state_dir/members.json with its status: registered (never "
            "connected), online, offline, or revoked; unknown while the SuperLink is down."
        ),
    )
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    listing.set_defaults(handler=_list, cfg=False)


def _join(args: argparse.Namespace) -> int:
    from fractofl.client.supernode import JoinSettings, supernode_command
    from fractofl.core.processes.flower_executables import flower_env, run_in_foreground
    from fractofl.core.trust.pki import CA_CERT_FILE, MEMBER_KEY_FILE

    member_dir = Path(to_run_config(compose_config(args.overrides)).deployment.member_dir)
    settings = JoinSettings(
        args.superlink,
        args.data,
        None if args.insecure else args.key or member_dir / MEMBER_KEY_FILE,
        None if args.insecure else args.ca or member_dir / CA_CERT_FILE,
        args.port,
    )
    command = supernode_command(settings, args.insecure)
    if args.insecure:
        print(
            "WARNING: --insecure: this member's updates travel in plain text and the "
            "coordinator is not verified",
            file=sys.stderr,
        )
    home = member_dir.resolve() / f"flwr-home-{args.port}"
    print(f"joining {args.superlink} with the images in {args.data}; Ctrl-C leaves", flush=True)
    return run_in_foreground(command, flower_env(home))


def _add(args: argparse.Namespace) -> int:
    from fractofl.server.member_registry import add_member
    from fractofl.server.superlink import CoordinatorFiles

    deployment = to_run_config(compose_config(args.overrides)).deployment
    files = CoordinatorFiles.from_config(deployment)
    member = add_member(files, deployment, args.public_key, args.name)
    print(f"registered {member.name}: node id {member.node_id}, key {member.fingerprint}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from fractofl.server.member_registry import revoke_member
    from fractofl.server.superlink import CoordinatorFiles

    deployment = to_run_config(compose_config(args.overrides)).deployment
    member = revoke_member(CoordinatorFiles.from_config(deployment), deployment, args.name)
    print(
        f"revoked {member.name}: node id {member.node_id} unregistered, key "
        f"{member.fingerprint} refused from now on; its SuperNode exits. To return, "
        "the member needs a new key pair (`fractofl member keys --force`)."
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from fractofl.server.member_registry import member_statuses
    from fractofl.server.superlink import CoordinatorFiles

    deployment = to_run_config(compose_config(args.overrides)).deployment
    statuses = member_statuses(CoordinatorFiles.from_config(deployment), deployment)
    if args.json:
        rows = [{**dataclasses.asdict(m), "status": status} for m, status in statuses]
        print(json.dumps(rows, indent=2))
    else:
        print_members(statuses)
    if any(status == "unknown" for _, status in statuses):
        print(
            f"the SuperLink does not answer on port {deployment.superlink_port}: statuses "
            "unknown (is `fractofl coordinator up` running?)",
            file=sys.stderr,
        )
    return 0


def print_members(statuses: list[tuple[Member, str]], indent: str = "") -> None:
    """A table of members: name, status, node id, key fingerprint, dates."""
    if not statuses:
        print(f"{indent}no members yet (`fractofl member add PUBKEY --name ORG`)")
        return
    width = max(len(m.name) for m, _ in statuses)
    for member, status in statuses:
        dates = f"added {member.added[:10]}" + (
            f", revoked {member.revoked[:10]}" if member.revoked else ""
        )
        print(
            f"{indent}{member.name:<{width}}  {status:<12} node {member.node_id:<20} "
            f"{member.fingerprint}  {dates}"
        )
