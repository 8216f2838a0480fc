"""``fractofl member join | add``: a member's SuperNode, and its registration by the coordinator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fractofl.cli.config import compose_config, to_run_config

DEFAULT_LOCAL_PORT = 9094
"""Flower's default for the SuperNode's own loopback port; members on one host need
different ones (``--port``)."""


def register_actions(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``member join`` and ``member add`` to the ``member`` group."""
    join = actions.add_parser(
        "join",
        help="run this member's SuperNode: train with the federation on local images",
        description=(
            "Connect to the coordinator's SuperLink over TLS (verified with the consortium's "
            "ca.crt), authenticate with this member's private key, and train the federation's "
            "model on the images in --data whenever the coordinator runs a round. Runs in "
            "the foreground (Ctrl-C leaves). Images never leave this machine: only model "
            "updates and metrics are sent."
        ),
    )
    join.add_argument("--superlink", required=True, help="the coordinator's HOST:PORT")
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
            "keys`) with the running SuperLink, so that the member may connect. Prints the "
            "node id."
        ),
    )
    add.add_argument("public_key", type=Path, help="the member's member.pub")
    add.add_argument("--name", required=True, help="the member organisation's name")
    add.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    add.set_defaults(handler=_add, cfg=False)


def _join(args: argparse.Namespace) -> int:
    from fractofl.client.supernode import JoinSettings, supernode_command
    from fractofl.core.flower_processes import flower_env, run_in_foreground
    from fractofl.core.pki import CA_CERT_FILE, MEMBER_KEY_FILE

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
    from fractofl.core.pki import public_key_fingerprint
    from fractofl.server.superlink import CoordinatorFiles, register_member

    deployment = to_run_config(compose_config(args.overrides)).deployment
    fingerprint = public_key_fingerprint(args.public_key)
    files = CoordinatorFiles.from_config(deployment)
    node_id = register_member(files, deployment, args.public_key, args.name)
    print(f"registered {args.name}: node id {node_id}, key {fingerprint}")
    return 0
