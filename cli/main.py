"""The ``fractofl`` command: one subcommand per job, each taking Hydra overrides."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

# Offline by default: no telemetry, no update check (set before flwr is imported).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from fractofl.cli import (
    coordinator_cmd,
    keys_cmd,
    member_cmd,
    models_cmd,
    pki_cmd,
    predict_cmd,
    report_cmd,
    serve_cmd,
)
from fractofl.cli.config import ConfigError, compose_config, to_run_config, to_yaml
from fractofl.core.config.run_config import RunConfig

log = logging.getLogger("fractofl")


# Problems the user can fix from the message alone (printed without a traceback), as
# "module:class": several of those modules import torch or Flower, which a command like
# ``member add`` never needs; an exception of one of these classes means its module is
# already imported, so ``is_user_error`` looks only among the modules already loaded.
USER_ERRORS = (
    "fractofl.core.images.partition:PartitionError",
    "fractofl.core.synth.dataset:ForeignFolderError",
    "fractofl.core.synth.dataset:UnknownSynthClassError",
    "fractofl.core.synth.dataset:SynthSettingsError",
    "fractofl.core.files.whole_folder:CannotWriteError",
    "fractofl.core.images.member_folders:MemberFoldersError",
    "fractofl.cli.profile:ProfileError",
    "fractofl.core.images.labelled:NoUsableImagesError",
    "fractofl.core.learning.member_data:ReferenceSetMissingError",
    "fractofl.server.errors:RunFolderError",
    "fractofl.server.errors:RoundStateError",
    "fractofl.core.trust.signing:SigningKeyError",
    "fractofl.core.trust.registry:RegistryError",  # and ModelVerificationError, its subclass
    "fractofl.core.model.checkpoint:CheckpointError",
    "fractofl.server.errors:NotEnoughMembersError",
    "fractofl.core.trust.pki:PkiError",
    "fractofl.server.superlink:DeploymentError",
    "fractofl.client.supernode:MemberSetupError",
    "fractofl.client.policy:PolicyError",
    "fractofl.core.processes.flower_executables:FlowerToolError",
    "fractofl.cli.ray_cluster:RayClusterError",
    "fractofl.strategies.privacy:PrivacySettingsError",
    "fractofl.strategies.privacy:PrivacyBudgetExhaustedError",
    "fractofl.strategies.secure_aggregation:SecureAggregationSettingsError",
    "fractofl.strategies.aggregation_mode:AggregationSettingsError",
    "fractofl.strategies.spill:SpillSpaceError",
    "fractofl.core.trust.app_bundle:BundleError",
    "fractofl.client.personal.same_model:ModelMismatchError",
    "fractofl.client.personal.local_models:NoValidationImagesError",
)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :data:`USER_ERRORS` (or ``FileExistsError``), importing
    nothing."""
    if isinstance(exc, FileExistsError):
        return True
    for path in USER_ERRORS:
        module_name, class_name = path.split(":")
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand; returns the exit code."""
    parser = _parser()
    # Overrides may follow options (`synth OUT --members 3 data.alpha=0.1`): argparse leaves
    # those to us, and anything that is not key=value is still an error.
    args, extra = parser.parse_known_args(argv)
    stray = [token for token in extra if "=" not in token]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _log_to_stderr()
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"fractofl: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"fractofl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record comes, not as it was when the
    handler was made: ``main`` may run again in one process (tests) with stderr swapped,
    and a handler holding a closed stream would fail every later record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _log_to_stderr() -> None:
    # Our own logger only: Flower's logger has its handler and would print twice via root.
    if not log.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fractofl",
        description="Federated learning of fracture-surface (SEM) image classifiers.",
        epilog="Every subcommand takes Hydra overrides, e.g. federation.rounds=20 data.alpha=0.1",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def job(name: str, help_text: str, folder_help: str = "") -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if folder_help:  # before the overrides, so that `CMD FOLDER key=value` parses
            cmd.add_argument("folder", type=Path, help=folder_help)
        cmd.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
        cmd.add_argument("--cfg", action="store_true", help="print the resolved config and exit")
        return cmd

    job(
        "simulate", "generate the synthetic set if needed and run a federated simulation"
    ).set_defaults(handler=_simulate)
    job(
        "demo",
        "the main job: simulate, then serve the final model on a local endpoint and query it",
    ).set_defaults(handler=_demo)
    job(
        "centralized", "train the same model on the union of the members' data (baseline)"
    ).set_defaults(handler=_centralized)
    job("config", "print the resolved config (--toml: as Flower's run config)").add_argument(
        "--toml", action="store_true", help="print [tool.flwr.app.config] for `flwr run`"
    )
    sub.choices["config"].set_defaults(handler=_config)

    synth = job(
        "synth",
        "write a synthetic SEM fracture data set split across members (options and "
        "overrides in any order)",
        folder_help="output folder",
    )
    synth.add_argument("--members", type=int, help="number of members (federation.members)")
    synth.add_argument("--alpha", type=float, help="Dirichlet alpha over classes (data.alpha)")
    synth.add_argument("--per-class", type=int, help="training images per class")
    synth.add_argument("--test-per-class", type=int, help="coordinator test images per class")
    synth.add_argument("--seed", type=int, help="generator seed (data.synth.seed)")
    synth.add_argument("--iid", action="store_true", help="split IID instead of Dirichlet")
    synth.add_argument(
        "--instrument-shift",
        type=float,
        help="each member's own microscope, 0 (alike) to 1 (strong) (data.synth.instrument_shift)",
    )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a set made with other settings (data.synth.overwrite)",
    )
    synth.add_argument(
        "--reference",
        type=int,
        metavar="PER_CLASS",
        help="write only a consortium reference set into the folder: this many images of "
        "each class that no member holds and the test set does not (for data.reference_dir)",
    )
    synth.add_argument(
        "--micrographs",
        action="store_true",
        help="write large 16-bit SEM TIFFs (FEI/Zeiss/JEOL metadata, data bar, mixed "
        "magnifications, physical feature sizes) for data=folders and a physical-scale model",
    )
    synth.add_argument(
        "--size",
        default=None,
        help=f"micrograph width x height in pixels (default {MICROGRAPH_SIZE})",
    )
    synth.set_defaults(handler=_synth)

    data = sub.add_parser("data", help="inspect a member's image folder")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser(
        "check", help="report images per class, bad files, duplicates, sizes and bit depths"
    )
    check.add_argument("directory", type=Path, help="folder with one sub-folder per class")
    check.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. data.classes=[a,b])")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=_data_check, cfg=False)
    coordinator_cmd.register(sub)
    report_cmd.register(sub)
    keys_cmd.register(sub)
    member_cmd.register_actions(pki_cmd.register(sub))
    models_cmd.register(sub)
    serve_cmd.register(sub)
    predict_cmd.register(sub)
    return parser


def _load(args: argparse.Namespace, extra: Sequence[str] = ()) -> tuple[RunConfig, str]:
    composed = compose_config([*args.overrides, *extra])
    return to_run_config(composed), to_yaml(composed)


def _with_absolute_paths(cfg: RunConfig, kind: str) -> RunConfig:
    """Absolute paths (simulated members run in other processes) and a named run folder."""
    name = cfg.output.name or _fresh_name(Path(cfg.output.root), kind)
    data = replace(
        cfg.data,
        root=_absolute(cfg.data.root),
        member_dirs=[_absolute(p) for p in cfg.data.member_dirs],
        test_dir=_absolute(cfg.data.test_dir),
    )
    output = replace(cfg.output, root=str(Path(cfg.output.root).resolve()), name=name)
    # The ServerApp of a real federation runs where the SuperLink runs: no relative paths.
    deployment = replace(
        cfg.deployment,
        pki_dir=_absolute(cfg.deployment.pki_dir),
        state_dir=_absolute(cfg.deployment.state_dir),
        member_dir=_absolute(cfg.deployment.member_dir),
    )
    reg = cfg.registry
    registry = replace(
        reg,
        root=str(Path(reg.root).resolve()),
        private_key=str(Path(reg.private_key).resolve()),
        public_key=str(Path(reg.public_key).resolve()),
        trusted_public_key=str(Path(reg.trusted_public_key).resolve()),
    )
    return replace(cfg, data=data, output=output, registry=registry, deployment=deployment)


def _absolute(path: str) -> str:
    """``path`` made absolute; an empty setting stays empty."""
    return str(Path(path).expanduser().resolve()) if path else ""


def _fresh_name(root: Path, kind: str) -> str:
    stem = f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    name, suffix = stem, 1
    while (root / name).exists():
        suffix += 1
        name = f"{stem}-{suffix}"
    return name


def prepared_run(
    args: argparse.Namespace, kind: str, generate_data: bool = True
) -> RunConfig | None:
    """The run config with absolute paths and (``generate_data``) its data in place: the
    synthetic set generated, or the member folders checked; ``None`` after printing it for
    ``--cfg``."""
    from fractofl.cli.config import validate_run_config
    from fractofl.cli.datasets import ensure_synthetic_data, resolve_member_folders_of
    from fractofl.server.errors import refuse_used_run_folder

    cfg, text = _load(args)
    if args.cfg:
        print(text)
        return None
    cfg = _with_absolute_paths(cfg, kind)
    refuse_used_run_folder(Path(cfg.output.root) / cfg.output.name)  # before Ray or a SuperLink
    if generate_data and cfg.data.source == "folders":
        cfg = resolve_member_folders_of(cfg, _requested_members(args.overrides))
        validate_run_config(cfg)  # federation.members now follows the member folders
    if cfg.privacy.dp and kind == "federated":
        from fractofl.strategies.privacy import check_dp_settings

        check_dp_settings(cfg)
    if cfg.privacy.secure_aggregation and kind == "federated":
        from fractofl.strategies.secure_aggregation import check_secagg_settings

        check_secagg_settings(cfg)
    if generate_data and cfg.data.source == "synthetic":
        ensure_synthetic_data(cfg)  # last: nothing is written before every check passed
    return cfg


def _requested_members(overrides: Sequence[str]) -> int | None:
    """``federation.members`` when the command line sets it."""
    values = [o.split("=", 1)[1] for o in overrides if o.startswith("federation.members=")]
    return int(values[-1]) if values and values[-1].isdigit() else None


def _simulate(args: argparse.Namespace) -> int:
    from fractofl.cli.simulation import simulate

    cfg = prepared_run(args, "federated")
    if cfg is None:
        return EXIT_OK
    simulate(cfg)
    return report_run(Path(cfg.output.root) / cfg.output.name)


def _demo(args: argparse.Namespace) -> int:
    from fractofl.cli.simulation import simulate
    from fractofl.cli.try_endpoint import query_local_endpoint
    from fractofl.server.evaluation import coordinator_test_dir

    cfg = prepared_run(args, "federated")
    if cfg is None:
        return EXIT_OK
    simulate(cfg)
    run_dir = Path(cfg.output.root) / cfg.output.name
    status = report_run(run_dir)
    if status != EXIT_OK:
        return status
    return query_local_endpoint(cfg, run_dir, coordinator_test_dir(cfg))


def _centralized(args: argparse.Namespace) -> int:
    from fractofl.cli.datasets import member_dirs
    from fractofl.server.centralized import run_centralized

    cfg = prepared_run(args, "centralized")
    if cfg is None:
        return EXIT_OK
    return report_run(run_centralized(cfg, member_dirs(cfg)))


def report_run(run_dir: Path) -> int:
    """Print a finished run's folder and final accuracy; exit code 1 if it did not finish."""
    from fractofl.server.round_state import STATE_FILE
    from fractofl.server.run_folder import SUMMARY_FILE

    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        hint = (
            f"; continue it with `fractofl coordinator resume {run_dir}`"
            if (run_dir / STATE_FILE).is_file()
            else ""
        )
        print(f"fractofl: the run did not finish: no {summary_path}{hint}", file=sys.stderr)
        return EXIT_FAILED
    summary = json.loads(summary_path.read_text())
    final = summary["final"]
    print(
        f"run folder: {run_dir}\n"
        f"final test accuracy {final['test_accuracy']:.3f}, macro-F1 {final['test_macro_f1']:.3f} "
        f"after {summary['rounds']} rounds"
    )
    if "privacy" in summary:
        privacy = summary["privacy"]
        print(
            f"differential privacy: epsilon {privacy['epsilon']:.3f} at delta {privacy['delta']:g}"
        )
    if "secure_aggregation" in summary:
        secure = summary["secure_aggregation"]
        print(
            f"secure aggregation: {secure['protocol']}, {secure['num_shares']} shares, "
            f"threshold {secure['reconstruction_threshold']}: the coordinator saw only sums"
        )
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    cfg, text = _load(args)
    if args.toml:
        from fractofl.cli.simulation import flower_app_config

        print(flower_app_config(cfg))
    else:
        print(text)
    return EXIT_OK


MICROGRAPH_SIZE = "2048x1536"
MICROGRAPHS_PER_CLASS = 12  # per member: a few minutes to write at full size
MICROGRAPHS_TEST_PER_CLASS = 6


def _synth(args: argparse.Namespace) -> int:
    from fractofl.cli.datasets import ensure_synthetic_data

    if args.micrographs:
        return _synth_micrographs(args)
    if args.reference is not None:
        return _synth_reference(args)

    flags = {
        "federation.members": args.members,
        "data.alpha": args.alpha,
        "data.synth.per_class": args.per_class,
        "data.synth.test_per_class": args.test_per_class,
        "data.synth.seed": args.seed,
        "data.synth.instrument_shift": args.instrument_shift,
    }
    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    out, args.overrides = _folder_and_overrides(args.folder, args.overrides)
    extra += [f"data.root={out}"] + (["data.partition=iid"] if args.iid else [])
    extra += ["data.synth.overwrite=true"] if args.overwrite else []
    cfg, text = _load(args, extra)
    if args.cfg:
        print(text)
        return EXIT_OK
    root = ensure_synthetic_data(cfg)
    print(f"synthetic data set in {root}")
    return EXIT_OK


def _synth_reference(args: argparse.Namespace) -> int:
    """``synth --reference N``: a consortium reference set of N images per class."""
    from fractofl.cli.datasets import synth_spec
    from fractofl.cli.progress import Progress
    from fractofl.core.synth.dataset import generate_reference_set

    out, args.overrides = _folder_and_overrides(args.folder, args.overrides)
    extra = [f"data.synth.seed={args.seed}"] if args.seed is not None else []
    cfg, text = _load(args, extra)
    if args.cfg:
        print(text)
        return EXIT_OK
    counts = generate_reference_set(
        out,
        synth_spec(cfg),
        args.reference,
        progress=Progress("reference set"),
        overwrite=args.overwrite,
    )
    print(
        f"reference set in {out}: {' '.join(f'{k}={v}' for k, v in counts.items())}; every "
        f"member trains on it with data.reference_dir={out} (a real member: `member join "
        f"--reference {out}`)"
    )
    return EXIT_OK


def _synth_micrographs(args: argparse.Namespace) -> int:
    """``synth --micrographs``: members' and coordinator's folders of large SEM TIFFs."""
    from fractofl.core.synth.micrograph import MicrographSpec
    from fractofl.core.synth.micrograph_sets import write_micrograph_federation

    out, args.overrides = _folder_and_overrides(args.folder, args.overrides)
    cfg, _ = _load(args)
    size = args.size or MICROGRAPH_SIZE
    width, _, height = size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise ConfigError(f"--size {size!r} is not WIDTHxHEIGHT in pixels, e.g. 2048x1536")
    try:
        spec = MicrographSpec(width=int(width), height=int(height))
    except ValueError as exc:
        raise ConfigError(f"--size {size}: {exc}") from None
    members = args.members or cfg.federation.members
    written = write_micrograph_federation(
        out,
        cfg.data.classes,
        members,
        args.per_class or MICROGRAPHS_PER_CLASS,
        args.test_per_class or MICROGRAPHS_TEST_PER_CLASS,
        spec,
        seed=args.seed if args.seed is not None else cfg.data.synth.seed,
        progress=lambda folder, count: print(f"  {folder}: {count} micrographs", flush=True),
    )
    total = sum(len(infos) for infos in written.values())
    print(
        f"{total} micrographs ({spec.width}x{spec.height}, 16-bit) in {out}; train on them "
        f"at a physical scale with\n  fractofl simulate data=folders data.root={out}/members "
        f"data.test_dir={out}/coordinator-test federation.members={members} "
        "model.pixel_size_um=0.1"
    )
    return EXIT_OK


def _folder_and_overrides(folder: Path, overrides: Sequence[str]) -> tuple[Path, list[str]]:
    """The one token without ``=`` is the folder, wherever it stood among the overrides
    (argparse assigns positionals by place, not by shape)."""
    tokens = [str(folder), *overrides]
    folders = [token for token in tokens if "=" not in token]
    if len(folders) != 1:
        raise ConfigError(
            f"name exactly one output folder (got {', '.join(folders) or 'none'}); every "
            "other argument is an option (--per-class 20) or an override (key=value)"
        )
    return Path(folders[0]), [token for token in tokens if "=" in token]


def _data_check(args: argparse.Namespace) -> int:
    from fractofl.cli.progress import Progress
    from fractofl.core.images.data_check import check_dataset, format_report

    cfg, _ = _load(args)
    # A physical-scale model: report the images it would skip as smaller than one tile.
    scale = (cfg.model.pixel_size_um, cfg.model.image_size) if cfg.model.pixel_size_um else None
    report = check_dataset(
        args.directory, cfg.data.classes, progress=Progress("checked"), model_scale=scale
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
