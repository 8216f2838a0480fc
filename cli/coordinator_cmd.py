"""``fractofl coordinator ...``: the coordinator's SuperLink and its runs."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import yaml

from fractofl.core.config.run_config import DeploymentConfig, RunConfig, from_nested
from fractofl.server.errors import RunFolderError
from fractofl.server.superlink import CoordinatorFiles

log = logging.getLogger("fractofl")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``coordinator up | front-config | status | run | resume``."""
    coordinator = sub.add_parser("coordinator", help="operate the coordinator's runs")
    actions = coordinator.add_subparsers(
        dest="coordinator_command", required=True, metavar="ACTION"
    )
    up = actions.add_parser(
        "up",
        help="run the SuperLink and its front, which members' SuperNodes connect to",
        description=(
            "Run Flower's SuperLink on its private address deployment.superlink_host:"
            "superlink_port (loopback; TLS with pki_dir/superlink.crt from `fractofl ca issue`, "
            "only members registered with `fractofl member add` may connect, registrations "
            "kept in state_dir/superlink.db across restarts) and the front, nginx on "
            "deployment.front_host:front_port, which forwards only the Fleet API (POST "
            "/v1/fleet/*) to it and refuses everything else. In the foreground; Ctrl-C stops both."
        ),
    )
    up.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    up.add_argument(
        "--insecure",
        action="store_true",
        help="plain text and no member authentication (a test federation only)",
    )
    up.add_argument(
        "--no-front",
        action="store_true",
        help="no nginx front: whoever reaches the SuperLink's port gets its Control API too",
    )
    up.set_defaults(handler=_up, cfg=False)
    front = actions.add_parser(
        "front-config",
        help="print the front's nginx configuration (for operators with their own proxy)",
        description=(
            "Print the nginx configuration `coordinator up` writes to state_dir/front/nginx.conf: "
            "TLS with the SuperLink's certificate, only POST /v1/fleet/* forwarded to the "
            "SuperLink over TLS verified against the CA, 403 for everything else."
        ),
    )
    front.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    front.add_argument("--insecure", action="store_true", help="plain text on both sides")
    front.set_defaults(handler=_front_config, cfg=False)
    status = actions.add_parser(
        "status",
        help="show the SuperLink, the front and which members are online",
        description=(
            "Check that the SuperLink answers on its private port, that the front answers on "
            "the public one and refuses the Control API, and list the members with their "
            "status. Exit code 1 when the SuperLink does not answer."
        ),
    )
    status.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    status.set_defaults(handler=_status, cfg=False)
    run = actions.add_parser(
        "run",
        help="start a federated run on the connected members (needs `coordinator up`)",
        description=(
            "Start a run of the fractofl ServerApp on the SuperLink that `coordinator up` "
            "runs, with the configuration these overrides compose, stream its log, and print "
            "the run folder and final accuracy."
        ),
    )
    run.add_argument("overrides", nargs="*", help="Hydra overrides (federation.rounds=10 ...)")
    run.set_defaults(handler=_run, cfg=False)
    resume = actions.add_parser(
        "resume",
        help="continue a stopped or crashed run from its last completed round",
        description=(
            "Continue the run in RUN_DIR from its checkpoint (checkpoint.pt, written after "
            "every completed round) with the configuration recorded in RUN_DIR/config.yaml: "
            "no completed round is repeated or lost."
        ),
    )
    resume.add_argument("run_dir", type=Path, help="the run folder (runs/<name>)")
    resume.set_defaults(handler=_resume, cfg=False)
    audit = actions.add_parser(
        "audit",
        help="print the coordinator's audit trail and verify its hash chain",
        description=(
            "Who started which run with which config digest, which members answered, failed "
            "or were refused in each round (with the SHA-256 of every update received), "
            "every version published and every deployment, from "
            "deployment.state_dir/audit.log; checks the hash chain and names the first "
            "changed, removed or cut-short line (exit 1)."
        ),
    )
    audit.add_argument("--log", type=Path, help="the trail (default: state_dir/audit.log)")
    audit.add_argument("--json", action="store_true", help="each event in full, as JSON")
    audit.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.state_dir=...)")
    audit.set_defaults(handler=_audit, cfg=False)


def resume_config(run_dir: Path) -> RunConfig:
    """The recorded configuration of the run in ``run_dir``, switched to resume it."""
    from fractofl.server.run_folder import CONFIG_FILE, SUMMARY_FILE

    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder: {config_path} is missing")
    if (run_dir / SUMMARY_FILE).is_file():
        raise RunFolderError(f"the run in {run_dir} already finished ({SUMMARY_FILE} exists)")
    cfg = from_nested(yaml.safe_load(config_path.read_text()))
    output = dataclasses.replace(
        cfg.output, root=str(run_dir.resolve().parent), name=run_dir.resolve().name, resume=True
    )
    return dataclasses.replace(cfg, output=output)


def _resume(args: argparse.Namespace) -> int:
    from fractofl.cli.deployed_run import resume_deployed
    from fractofl.cli.main import report_run
    from fractofl.cli.simulation import simulate

    cfg = resume_config(args.run_dir)
    if cfg.output.engine == "deployment":
        log.info("resuming %s on the Deployment Engine, as it was started", args.run_dir)
        return resume_deployed(cfg, args.run_dir.resolve())
    simulate(cfg)
    return report_run(args.run_dir)


def _up(args: argparse.Namespace) -> int:
    from fractofl.cli.profile import coordinator_config, save_coordinator_profile
    from fractofl.core.processes.flower_executables import flower_env
    from fractofl.server.launcher import plan_services, run_services

    deployment = coordinator_config(args.overrides).deployment
    files = CoordinatorFiles.from_config(deployment)
    services = plan_services(deployment, files, args.insecure, not args.no_front)
    saved = save_coordinator_profile(deployment)
    print(f"deployment settings saved in {saved}: later coordinator commands use them", flush=True)
    for warning in up_warnings(deployment, args.insecure, args.no_front):
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    ready = ready_message(deployment, files, args.insecure, args.no_front)
    return run_services(services, flower_env(files.flwr_home), deployment.connect_timeout_s, ready)


def ready_message(
    deployment: DeploymentConfig, files: CoordinatorFiles, insecure: bool, no_front: bool
) -> str:
    """What `coordinator up` prints once everything listens: where, and how members join."""
    from fractofl.server.front import FrontFiles

    kind = "plain text" if insecure else "TLS"
    state = (
        f"Flower's state in memory, fractofl's in {files.state_dir}"
        if deployment.superlink_store == "memory"
        else f"state in {files.state_dir}"
    )
    lines = [
        f"SuperLink on {deployment.superlink_host}:{deployment.superlink_port} ({kind}; {state})"
    ]
    port = deployment.superlink_port if no_front else deployment.front_port
    if not no_front:
        lines.append(
            f"front on {deployment.front_host}:{port} (nginx, {kind}; only POST /v1/fleet/*; "
            f"access log {FrontFiles.of(files).access_log})"
        )
    join = (
        "--insecure"
        if insecure
        else f"(their member.key and this {files.ca_cert.name} in deployment.member_dir)"
    )
    return "\n".join(
        [
            *lines,
            "members join with:",
            f"  fractofl member join --superlink <this host>:{port} --data <their images> {join}",
            "Ctrl-C stops it.",
        ]
    )


def up_warnings(deployment: DeploymentConfig, insecure: bool, no_front: bool) -> list[str]:
    """What `coordinator up` exposes with ``--insecure`` or ``--no-front``, in words."""
    from fractofl.server.front import PRIVATE_HOSTS

    warnings = []
    if insecure:
        port = deployment.superlink_port if no_front else deployment.front_port
        warnings.append(
            f"--insecure: plain text and no member authentication on port {port}: anyone who "
            "reaches it can read the global model and the members' updates and join as a "
            "member. Use it for a test federation only."
        )
    if no_front:
        address = f"{deployment.superlink_host}:{deployment.superlink_port}"
        warnings.append(
            f"--no-front: the SuperLink's Control API is open on {address} next to the Fleet "
            "API, and open-source Flower asks for no credentials there: anyone who reaches "
            "that port can start runs (which execute code on this machine), stop them, read "
            "their logs, and register or unregister SuperNodes. "
            + (
                "It listens on loopback only: members need a proxy of yours in front "
                "(`fractofl coordinator front-config` prints ours)."
                if deployment.superlink_host in PRIVATE_HOSTS
                else "Expose it only where nobody but the coordinator can reach it."
            )
        )
    return warnings


def _front_config(args: argparse.Namespace) -> int:
    import os

    from fractofl.cli.profile import coordinator_config
    from fractofl.server.front import check_front_settings, front_config

    deployment = coordinator_config(args.overrides).deployment
    check_front_settings(deployment)
    files = CoordinatorFiles.from_config(deployment)
    print(front_config(deployment, files, args.insecure, os.geteuid() == 0), end="")
    return 0


def _status(args: argparse.Namespace) -> int:
    from fractofl.cli.member_cmd import print_members
    from fractofl.cli.profile import coordinator_config
    from fractofl.server.member_registry import member_statuses
    from fractofl.server.status import probe_front, probe_superlink

    deployment = coordinator_config(args.overrides).deployment
    files = CoordinatorFiles.from_config(deployment)
    superlink = probe_superlink(deployment)
    print(f"SuperLink  {superlink}")
    print(f"front      {probe_front(deployment, files)}")
    statuses = member_statuses(files, deployment)
    active = [status for _, status in statuses if status != "revoked"]
    print(f"members    {active.count('online')} of {len(active)} registered online")
    print_members(statuses, indent="  ")
    return 0 if superlink.running else 1


def _run(args: argparse.Namespace) -> int:
    from fractofl.cli.deployed_run import run_deployed
    from fractofl.cli.main import prepared_run
    from fractofl.cli.profile import apply_coordinator_profile

    # The members' images are theirs: nothing is generated here, the coordinator only
    # needs its own test set.
    cfg = prepared_run(args, "federated", generate_data=False)
    if cfg is None:
        return 0
    cfg = apply_coordinator_profile(cfg, args.overrides)
    deployed = dataclasses.replace(cfg.output, engine="deployment")
    return run_deployed(dataclasses.replace(cfg, output=deployed))


def _audit(args: argparse.Namespace) -> int:
    from fractofl.cli.audit_cmd import print_audit
    from fractofl.cli.profile import coordinator_config
    from fractofl.server.audit_trail import coordinator_audit_path

    if args.log is None:
        args.log = coordinator_audit_path(coordinator_config(args.overrides))
    return print_audit(args.log, full=args.json)
