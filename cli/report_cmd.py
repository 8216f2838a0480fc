"""``fractofl report RUN_DIR``: curves of a run and one model version class by class."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from fractofl.core.config.run_config import RunConfig, from_nested
from fractofl.server.errors import RunFolderError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``report``."""
    report = sub.add_parser(
        "report",
        help="render a run's accuracy and loss per round and a model version's scores",
        description=(
            "Write PNG plots (accuracy and loss per round; confusion matrix and per-class "
            "precision and recall of one model version on the run's coordinator test set) "
            "and a Markdown summary. The version is verified against the trusted public key "
            "before it is loaded."
        ),
    )
    report.add_argument("run_dir", type=Path, help="the run folder (runs/<name>)")
    report.add_argument(
        "--version",
        help="registry version to score (number, vNNNNNN or latest; default: the run's last)",
    )
    report.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report)")
    report.add_argument("--registry", type=Path, metavar="DIR", help="default: the run's registry")
    report.add_argument(
        "--public-key", type=Path, metavar="FILE", help="default: registry.trusted_public_key"
    )
    report.set_defaults(handler=_report, cfg=False)


def _run_config(run_dir: Path) -> RunConfig:
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder: {config_path} is missing")
    return from_nested(yaml.safe_load(config_path.read_text()))


def _run_id(run_dir: Path) -> str | None:
    """The run id from summary.json, or from the checkpoint of an unfinished run."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        return str(json.loads(summary.read_text())["run_id"])
    from fractofl.server.round_state import STATE_FILE, load_round_state

    return load_round_state(run_dir).run_id if (run_dir / STATE_FILE).is_file() else None


def _report(args: argparse.Namespace) -> int:
    from fractofl.core.model.checkpoint import load_checkpoint
    from fractofl.core.trust.registry import ModelRegistry, RegistryError
    from fractofl.core.trust.signing import fingerprint, load_public_key
    from fractofl.server.run_report import ScoredModel, score_checkpoint, write_report
    from fractofl.serving.client import describe_contributors

    run_dir: Path = args.run_dir
    cfg = _run_config(run_dir)
    registry = ModelRegistry(args.registry or Path(cfg.registry.root))
    run_id = _run_id(run_dir)
    version = args.version
    if version is None and run_id is not None:
        try:
            version = registry.latest(run_id).version
        except RegistryError:
            version = None  # e.g. a centralized run: nothing published
    if version is not None:
        trusted = load_public_key(args.public_key or Path(cfg.registry.trusted_public_key))
        checkpoint, meta = registry.load_verified(version, trusted)
        members = describe_contributors(meta.contributors)
        provenance = (
            f"registry version {meta.name} in {registry.root}: round {meta.round} of run "
            f"`{meta.run_id}`, signature verified with key {fingerprint(trusted)}; members "
            f"whose updates are in it: {members}"
        )
        label, model_round = meta.name, meta.round
        signed_temperature = meta.metrics.get("temperature")
    else:
        checkpoint = load_checkpoint(run_dir / "model.pt")
        provenance = f"{run_dir / 'model.pt'} (the run folder's own model, not a signed version)"
        label, model_round = "model", checkpoint.round
        signed_temperature = None
    if list(checkpoint.classes) != list(cfg.data.classes):
        raise RunFolderError(
            f"{label} classifies {checkpoint.classes}, the run's test set has "
            f"{cfg.data.classes}: choose a version of this run (--version)"
        )
    result, calibration = score_checkpoint(cfg, checkpoint)
    out = args.out or run_dir / "report"
    scored = ScoredModel(label, provenance, model_round, result, calibration, signed_temperature)
    path = write_report(run_dir, cfg, scored, out)
    print(f"report written to {path} (accuracy of {label}: {result.accuracy:.3f})")
    return 0
