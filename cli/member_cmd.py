"""``fractofl member join | add | revoke | list | audit | approve``: a member's SuperNode, its
audit log and approved code, and the coordinator's register of members (``baseline``,
``personalize``, ``report`` and ``gains``: :mod:`fractofl.cli.member_models_cmd`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fractofl.cli.approve_cmd import print_approved_code, register_approve
from fractofl.cli.config import compose_config, to_run_config
from fractofl.cli.member_models_cmd import register_member_models
from fractofl.cli.profile import (
    MEMBER_PROFILE,
    coordinator_config,
    member_profile,
    save_member_profile,
)
from fractofl.client.supernode import MemberSetupError

if TYPE_CHECKING:
    from fractofl.server.member_registry import Member

log = logging.getLogger("fractofl")

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
            "updates and metrics are sent. A warm member process (Flower, torch and fractofl "
            "imported once) runs each instruction, and only code this member approved runs "
            "(`fractofl member approve`)."
        ),
    )
    join.add_argument(
        "--superlink",
        help="the coordinator's front, HOST:PORT (its deployment.front_port); saved, with "
        "the other settings, in deployment.member_dir/join.yaml for the next `member join`",
    )
    join.add_argument("--data", type=Path, help="this member's image folder (saved too)")
    join.add_argument(
        "--reference",
        type=Path,
        help="the consortium's reference set, if it has one: a folder of images of every "
        "class that belong to no member, the same copy at every member; added to this "
        "member's training (saved too)",
    )
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
        help=f"the SuperNode's own loopback port (default {DEFAULT_LOCAL_PORT})",
    )
    join.add_argument(
        "--insecure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="plain text, no key (a test federation only; --no-insecure undoes a saved one)",
    )
    join.add_argument(
        "--cold",
        action="store_true",
        help="no warm member: every instruction starts a fresh Python process that imports "
        "Flower and torch (slower; still behind the code gate)",
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
    audit = actions.add_parser(
        "audit",
        help="print this member's audit log and verify its hash chain",
        description=(
            "Every instruction this member's node received and every reply it sent (run, "
            "round, kind, the instruction's config digest; for what left: array names, "
            "shapes, dtypes, bytes and SHA-256, and the metrics), from "
            "deployment.member_dir/audit.log; checks the hash chain and names the first "
            "changed, removed or cut-short line (exit 1)."
        ),
    )
    audit.add_argument("--log", type=Path, help="the log (default: member_dir/audit.log)")
    audit.add_argument("--json", action="store_true", help="each event in full, as JSON")
    audit.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.member_dir=...)")
    audit.set_defaults(handler=_audit, cfg=False)
    register_approve(actions)
    register_member_models(actions)


def _join(args: argparse.Namespace) -> int:
    from fractofl.client.code_gate import APPROVED_CODE_FILE
    from fractofl.client.supernode import (
        MEMBER_CACHE_DIR,
        JoinSettings,
        start_warm_member,
        supernode_command,
        why_it_stopped,
        with_code_gate,
    )
    from fractofl.core.processes.flower_executables import flower_env, run_in_foreground
    from fractofl.core.trust.pki import CA_CERT_FILE, MEMBER_KEY_FILE

    deployment = to_run_config(compose_config(args.overrides), training=False).deployment
    member_dir = Path(deployment.member_dir)
    given = join_settings(args, member_dir)
    insecure = bool(given["insecure"])
    settings = JoinSettings(
        str(given["superlink"]),
        Path(str(given["data"])),
        None if insecure else Path(str(given["key"] or member_dir / MEMBER_KEY_FILE)),
        None if insecure else Path(str(given["ca"] or member_dir / CA_CERT_FILE)),
        int(str(given["port"])),
        audit_log=member_dir / MEMBER_AUDIT_FILE,
        policy=_checked_policy(member_dir),
        approved_code=member_dir / APPROVED_CODE_FILE,
        cache_dir=member_dir / MEMBER_CACHE_DIR,
        reference_dir=Path(str(given["reference"])) if given.get("reference") else None,
        poll_s=deployment.member_poll_s,
        task_poll_s=deployment.member_task_poll_s,
    )
    command = supernode_command(settings, insecure)
    resolved = {"data": str(settings.data_dir.resolve())}
    if settings.reference_dir is not None:
        resolved["reference"] = str(settings.reference_dir.resolve())
    saved = save_member_profile(member_dir, {**given, **resolved})
    print(f"join settings saved in {saved}: the next `member join` needs none", flush=True)
    if insecure:
        print(
            "WARNING: --insecure: this member's updates travel in plain text and the "
            "coordinator is not verified",
            file=sys.stderr,
        )
    home = member_dir.resolve() / f"flwr-home-{settings.local_port}"
    env = with_code_gate(flower_env(home), member_dir.resolve(), warm=not args.cold)
    print_approved_code(settings)
    if args.cold:
        print("--cold: no warm member; every instruction starts a fresh process", flush=True)
    reference = settings.reference_dir
    also = "" if reference is None else f" and the reference set in {reference}"
    print(
        f"joining {settings.superlink} with the images in {settings.data_dir}{also}; Ctrl-C leaves",
        flush=True,
    )
    warm = None if args.cold else start_warm_member(member_dir.resolve(), env)
    try:
        exited = run_in_foreground(command, env)
    finally:
        if warm is not None:
            warm.stop()
    reason = why_it_stopped(
        exited.code, exited.asked_to_stop, settings.superlink, consortium_name(settings.ca_cert)
    )
    if reason is not None:
        print(f"fractofl: this member left the federation: {reason}", file=sys.stderr)
    return exited.code


JOIN_SETTINGS = ("superlink", "data", "reference", "key", "ca", "port", "insecure")


def join_settings(args: argparse.Namespace, member_dir: Path) -> dict[str, object]:
    """``member join``'s settings: the command line's, else the saved ones, else the
    defaults; says which saved ones it used and which the command line replaced."""
    saved = member_profile(member_dir)
    settings: dict[str, object] = {"key": None, "ca": None, "port": DEFAULT_LOCAL_PORT}
    settings["insecure"] = False
    taken = []
    for name in JOIN_SETTINGS:
        value = getattr(args, name)
        if value is not None:
            if name in saved and saved[name] != (str(value) if isinstance(value, Path) else value):
                log.info("--%s %s from the command line, not %s as saved", name, value, saved[name])
            settings[name] = str(value) if isinstance(value, Path) else value
        elif name in saved:
            settings[name] = saved[name]
            taken.append(f"--{name} {saved[name]}")
    if taken:
        log.info("member join settings from %s: %s", member_dir / MEMBER_PROFILE, " ".join(taken))
    missing = [f"--{name}" for name in ("superlink", "data") if not settings.get(name)]
    if missing:
        raise MemberSetupError(
            f"member join needs {' and '.join(missing)} (the coordinator's address and this "
            f"member's image folder) the first time; then {member_dir / MEMBER_PROFILE} "
            "remembers them"
        )
    return settings


def consortium_name(ca_cert: Path | None) -> str:
    """The consortium as its CA certificate names it (a test federation has none)."""
    from fractofl.core.trust.pki import PkiError, certificate_summary

    if ca_cert is None or not ca_cert.is_file():
        return "the federation"
    try:
        return str(certificate_summary(ca_cert)["subject"])
    except (PkiError, ValueError):
        return "the federation"


def _add(args: argparse.Namespace) -> int:
    from fractofl.server.member_registry import add_member
    from fractofl.server.superlink import CoordinatorFiles

    deployment = coordinator_config(args.overrides).deployment
    files = CoordinatorFiles.from_config(deployment)
    member = add_member(files, deployment, args.public_key, args.name)
    print(f"registered {member.name}: node id {member.node_id}, key {member.fingerprint}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from fractofl.server.member_registry import revoke_member
    from fractofl.server.superlink import CoordinatorFiles

    deployment = coordinator_config(args.overrides).deployment
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

    deployment = coordinator_config(args.overrides).deployment
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


MEMBER_AUDIT_FILE = "audit.log"


def _audit(args: argparse.Namespace) -> int:
    from fractofl.cli.audit_cmd import print_audit

    if args.log is None:
        member_dir = to_run_config(
            compose_config(args.overrides), training=False
        ).deployment.member_dir
        args.log = Path(member_dir) / MEMBER_AUDIT_FILE
    return print_audit(args.log, full=args.json)


def _checked_policy(member_dir: Path) -> Path | None:
    """The member's policy file, read and shown now so that a mistake stops the join
    (PolicyError naming the key), or None when the member wrote none."""
    from fractofl.client.policy import POLICY_FILE, describe, load_policy

    path = member_dir / POLICY_FILE
    if not path.is_file():
        return None
    rules = describe(load_policy(path))
    print(f"member policy {path}: " + ("; ".join(rules) if rules else "no rule set"), flush=True)
    return path
