"""``fractofl ca init | issue`` and ``fractofl member keys``: the consortium's TLS
certificates (coordinator) and a member's SuperNode key pair (member)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fractofl.cli.config import load_run_config
from fractofl.core.trust.pki import (
    CA_CERT_FILE,
    MEMBER_PUBLIC_KEY_FILE,
    certificate_summary,
    create_ca,
    create_member_key_pair,
    issue_server_certificate,
)


def register(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``ca init``, ``ca issue`` and the ``member`` group with ``member keys``; returns
    the ``member`` group's actions, to which other modules add theirs (``member join``)."""
    _register_ca(sub)
    return _register_member(sub)


def _register_ca(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser("ca", help="the consortium's certificate authority (coordinator)")
    actions = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="create the CA key and certificate in deployment.pki_dir",
        description="Create the consortium CA: ca.key (EC P-384, mode 0600) must never leave "
        "the coordinator; ca.crt is the file every member's SuperNode trusts.",
    )
    issue = actions.add_parser(
        "issue",
        help="issue the SuperLink's TLS certificate, signed by the CA",
        description="Issue superlink.key and superlink.crt in deployment.pki_dir for the names "
        "and addresses members reach the coordinator on (localhost and 127.0.0.1 are always "
        "included).",
    )
    issue.add_argument(
        "--host",
        action="append",
        metavar="H",
        help="a name or IP address members connect to; repeat it (default: deployment.hosts)",
    )
    for action, handler in ((init, _ca_init), (issue, _ca_issue)):
        action.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. deployment.*)")
        action.add_argument("--force", action="store_true", help="replace existing files")
        action.set_defaults(handler=handler, cfg=False)


def _register_member(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    member = sub.add_parser("member", help="a member's side of a real federation")
    actions = member.add_subparsers(dest="member_command", required=True, metavar="ACTION")
    keys = actions.add_parser(
        "keys",
        help="create this member's SuperNode key pair (EC P-384, OpenSSH)",
        description="Create member.key (mode 0600; it never leaves this machine) and member.pub, "
        "the public key the coordinator registers for this member's SuperNode.",
    )
    keys.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. deployment.*)")
    keys.add_argument("--dir", type=Path, help="where the key pair goes (deployment.member_dir)")
    keys.add_argument("--force", action="store_true", help="replace an existing key pair")
    keys.set_defaults(handler=_member_keys, cfg=False)
    return actions


def _ca_init(args: argparse.Namespace) -> int:
    from fractofl.cli.profile import coordinator_config, save_coordinator_profile

    deployment = coordinator_config(args.overrides).deployment
    files = create_ca(
        Path(deployment.pki_dir), deployment.ca_name, deployment.ca_days, force=args.force
    )
    print(f"deployment settings saved in {save_coordinator_profile(deployment)}")
    summary = certificate_summary(files.certificate)
    print(f"CA certificate: {files.certificate.resolve()}")
    print(f"  {summary['subject']}, valid until {summary['not_valid_after']}")
    print(f"  SHA-256 fingerprint {summary['sha256']}")
    print(
        f"  every member needs this file ({CA_CERT_FILE}); they can check it against "
        "the fingerprint, which you tell them by another channel"
    )
    print(f"CA private key: {files.key.resolve()} (mode 0600)")
    print("  it must never leave the coordinator")
    if args.force:
        print(
            "replaced the CA: issue the SuperLink certificate again "
            "(`fractofl ca issue --force`) and give every member the new ca.crt"
        )
    return 0


def _ca_issue(args: argparse.Namespace) -> int:
    from fractofl.cli.profile import coordinator_config

    deployment = coordinator_config(args.overrides).deployment
    hosts = args.host or deployment.hosts
    issued = issue_server_certificate(
        Path(deployment.pki_dir), hosts, deployment.certificate_days, force=args.force
    )
    summary = certificate_summary(issued.certificate)
    print(f"SuperLink certificate: {issued.certificate.resolve()}")
    print(f"  signed by {summary['issuer']}, valid until {summary['not_valid_after']}")
    print(f"  names and addresses: {', '.join(issued.subject_alternative_names)}")
    print("  members must connect to one of these")
    print(f"SuperLink private key: {issued.key.resolve()} (mode 0600)")
    print("  it stays on the coordinator")
    return 0


def _member_keys(args: argparse.Namespace) -> int:
    deployment = load_run_config(args.overrides, training=False).deployment
    member_dir = args.dir or Path(deployment.member_dir)
    keys = create_member_key_pair(member_dir, force=args.force)
    print(f"private key: {keys.private_key.resolve()} (mode 0600)")
    print("  it never leaves this machine")
    print(f"public key:  {keys.public_key.resolve()}")
    print(f"fingerprint: {keys.fingerprint}")
    print(
        f"send only {MEMBER_PUBLIC_KEY_FILE} to the coordinator, and confirm the fingerprint "
        "with them by another channel"
    )
    return 0
