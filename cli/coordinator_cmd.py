"""``fractofl coordinator ...``: the coordinator's operations on its runs."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from fractofl.core.run_config import RunConfig, from_nested
from fractofl.server.errors import RunFolderError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``coordinator resume``."""
    coordinator = sub.add_parser("coordinator", help="operate the coordinator's runs")
    actions = coordinator.add_subparsers(
        dest="coordinator_command", required=True, metavar="ACTION"
    )
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
