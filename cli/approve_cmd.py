"""``fractofl member approve``: the app bundles whose code this member runs.

The member's code gate (:mod:`fractofl.client.code_gate`) lets a run's ClientApp run only
when the run's bundle is fractofl's own or its code digest was approved here (or in the
policy's ``approved_code``). The list is read for every instruction: a change takes effect
without restarting ``member join``.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from fractofl.cli.config import compose_config, to_run_config

if TYPE_CHECKING:
    from fractofl.client.supernode import JoinSettings


def register_approve(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``member approve`` to the ``member`` group."""
    approve = actions.add_parser(
        "approve",
        help="let runs whose app bundle has this code digest run on this member",
        description=(
            "This member's node runs a run's ClientApp only if the run's app bundle is "
            "fractofl's own (which runs the fractofl installed here) or its code digest is "
            "approved: `fractofl coordinator run` prints the digest, and a refused run's "
            "digest is in this member's log and audit log. Approvals are kept in "
            "deployment.member_dir/approved-code.txt and take effect at the next "
            "instruction. Without DIGEST: list what this member runs."
        ),
    )
    approve.add_argument("digest", nargs="?", help="the bundle's code digest (64 hex digits)")
    approve.add_argument("--note", default="", help="why it is approved (kept beside it)")
    approve.add_argument(
        "--remove", action="store_true", help="withdraw the approval of DIGEST instead"
    )
    approve.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.member_dir=...)")
    approve.set_defaults(handler=_approve, cfg=False)


def installed_fractofl() -> str:
    """The installed fractofl's version, for what a member is told it runs."""
    try:
        return version("fractofl")
    except PackageNotFoundError:
        return "(not installed as a package)"


def print_approved_code(settings: JoinSettings) -> None:
    """What ``member join`` says this member's node will run."""
    from fractofl.client.code_gate import OWN_BUNDLE, approved_code
    from fractofl.client.node_config import APPROVED_CODE_KEY, POLICY_KEY

    node_config = {
        APPROVED_CODE_KEY: str(settings.approved_code or ""),
        POLICY_KEY: str(settings.policy or ""),
    }
    approved = approved_code(node_config)
    others = [digest[:12] for digest, source in approved.items() if source != OWN_BUNDLE]
    also = f" and {len(others)} approved digest(s) ({', '.join(others)})" if others else ""
    print(
        f"code gate: this member runs fractofl's own bundle (the fractofl "
        f"{installed_fractofl()} installed here){also}; any other run's code is refused "
        "(`fractofl member approve`)",
        flush=True,
    )


def _seen(audit_log: Path, digest: str) -> list[str]:
    """The refusals of bundles with ``digest`` in the member's audit log, one line each."""
    from fractofl.client.code_gate import REFUSED_CODE_EVENT
    from fractofl.core.trust.audit_log import AuditLogError, read_log

    if not audit_log.is_file():
        return []
    seen = []
    try:
        for entry in read_log(audit_log):
            event = entry.event
            if event.get("kind") == REFUSED_CODE_EVENT and event.get("code_digest") == digest:
                files = ", ".join(event.get("code_files") or []) or "no files of its own"
                seen.append(
                    f"run {event.get('run_id')} at {entry.time}: ClientApp "
                    f"{event.get('clientapp')}, {files}"
                )
    except AuditLogError as exc:
        print(f"fractofl: cannot read {audit_log}: {exc}", file=sys.stderr)
    return seen


def _approve(args: argparse.Namespace) -> int:
    from fractofl.cli.member_cmd import MEMBER_AUDIT_FILE
    from fractofl.client.code_gate import (
        APPROVED_CODE_FILE,
        OWN_BUNDLE,
        add_approval,
        approved_code,
        remove_approval,
    )
    from fractofl.client.node_config import APPROVED_CODE_KEY, POLICY_KEY
    from fractofl.client.policy import POLICY_FILE
    from fractofl.core.trust.app_bundle import parse_digest

    if args.digest is not None and "=" in args.digest:  # `approve key=value`: no digest
        args.overrides, args.digest = [args.digest, *args.overrides], None
    member_dir = Path(
        to_run_config(compose_config(args.overrides), training=False).deployment.member_dir
    )
    approvals = member_dir / APPROVED_CODE_FILE
    if args.digest is None:
        policy = member_dir / POLICY_FILE
        node_config = {
            APPROVED_CODE_KEY: str(approvals),
            POLICY_KEY: str(policy) if policy.is_file() else "",
        }
        for digest, source in approved_code(node_config).items():
            print(f"{digest}  {OWN_BUNDLE if source == OWN_BUNDLE else 'approved in ' + source}")
        return 0
    digest = parse_digest(args.digest)
    if args.remove:
        if not remove_approval(approvals, digest):
            print(f"fractofl: {digest} is not approved in {approvals}", file=sys.stderr)
            return 1
        print(f"withdrawn: runs with code digest {digest} are refused from the next instruction")
        return 0
    seen = _seen(member_dir / MEMBER_AUDIT_FILE, digest)
    if not add_approval(approvals, digest, args.note):
        print(f"{digest} is already approved in {approvals}")
        return 0
    print(f"approved in {approvals}: runs with code digest {digest} run on this member")
    if seen:
        print("this member refused it before: " + "; ".join(seen[-3:]))
    else:
        print(
            "warning: no run with this code has reached this member yet; check the digest "
            "against the one `fractofl coordinator run` printed",
            file=sys.stderr,
        )
    return 0
