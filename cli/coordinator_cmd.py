"""``fractofl coordinator ...``: the coordinator's SuperLink and its runs."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import yaml

from fractofl.core.run_config import RunConfig, from_nested
from fractofl.server.errors import RunFolderError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``coordinator up | run | resume``."""
    coordinator = sub.add_parser("coordinator", help="operate the coordinator's runs")
    actions = coordinator.add_subparsers(
        dest="coordinator_command", required=True, metavar="ACTION"
    )
    up = actions.add_parser(
        "up",
        help="run the SuperLink that members' SuperNodes connect to (TLS, authenticated)",
        description=(
            "Run Flower's SuperLink on deployment.superlink_host:superlink_port in the "
            "foreground (Ctrl-C stops it): TLS with pki_dir/superlink.crt (from `fractofl ca "
            "issue`), only members registered with `fractofl member add` may connect, and "
            "registrations are kept in state_dir/superlink.db across restarts."
        ),
    )
    up.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.*)")
    up.add_argument(
        "--insecure",
        action="store_true",
        help="plain text and no member authentication (a test federation only)",
    )
    up.set_defaults(handler=_up, cfg=False)
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
    from fractofl.cli.main import report_run
    from fractofl.cli.simulation import simulate

    cfg = resume_config(args.run_dir)
    simulate(cfg)
    return report_run(args.run_dir)


def _up(args: argparse.Namespace) -> int:
    from fractofl.cli.config import compose_config, to_run_config
    from fractofl.core.flower_processes import flower_env, run_in_foreground
    from fractofl.server.superlink import CoordinatorFiles, superlink_command, write_connection

    deployment = to_run_config(compose_config(args.overrides)).deployment
    files = CoordinatorFiles.from_config(deployment)
    command = superlink_command(deployment, files, args.insecure)
    files.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_connection(files, deployment, args.insecure)
    address = f"{deployment.superlink_host}:{deployment.superlink_port}"
    if args.insecure:
        print(
            f"WARNING: --insecure: the SuperLink on {address} speaks plain text and lets any "
            "SuperNode join without a registered key; anyone who reaches it can read the "
            "global model and the members' updates, join as a member, and start runs on "
            "this machine. Use it for a test federation only.",
            file=sys.stderr,
        )
        join = "--insecure"
    else:
        join = f"(their member.key and this {files.ca_cert.name} in deployment.member_dir)"
    print(
        f"SuperLink on {address} ({'plain text' if args.insecure else 'TLS'}; state in "
        f"{files.state_dir}); members join with:\n"
        f"  fractofl member join --superlink <this host>:{deployment.superlink_port} "
        f"--data <their images> {join}\nCtrl-C stops it.",
        flush=True,
    )
    return run_in_foreground(command, flower_env(files.flwr_home))


def _run(args: argparse.Namespace) -> int:
    from fractofl.cli.main import prepared_run, report_run
    from fractofl.cli.simulation import flower_app_config
    from fractofl.core.flower_processes import flower_env, flower_tool
    from fractofl.server.evaluation import coordinator_test_dir
    from fractofl.server.superlink import (
        CONNECTION,
        CoordinatorFiles,
        DeploymentError,
        control_host,
        wait_for_port,
    )

    # The members' images are theirs: nothing is generated here, the coordinator only
    # needs its own test set.
    cfg = prepared_run(args, "federated", generate_data=False)
    if cfg is None:
        return 0
    test_dir = coordinator_test_dir(cfg)
    if not test_dir.is_dir():
        raise DeploymentError(
            f"the coordinator's test set {test_dir} does not exist: set data.test_dir to a "
            "folder of labelled images (one sub-folder per class), or generate the synthetic "
            "set with `fractofl synth` and point data.root at it"
        )
    deployment = cfg.deployment
    files = CoordinatorFiles.from_config(deployment)
    wait_for_port(control_host(deployment), deployment.superlink_port, deployment.connect_timeout_s)
    app_dir = files.state_dir / "apps" / cfg.output.name
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(flower_app_config(cfg))
    status = subprocess.run(
        [flower_tool("flwr"), "run", str(app_dir), CONNECTION, "--stream"],
        env=flower_env(files.flwr_home),
        check=False,
    ).returncode
    if status != 0:
        print(f"fractofl: error: `flwr run` exited {status}", file=sys.stderr)
        return status
    return report_run(Path(cfg.output.root) / cfg.output.name)
