"""``fractofl member baseline | personalize | report | gains``: does joining pay off for
this member? Its own local-only and personalized models, kept and signed in its member
folder, and their scores beside the global model's on its own validation split."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fractofl.cli.config import load_run_config
from fractofl.cli.profile import MEMBER_PROFILE, member_profile
from fractofl.client.supernode import MemberSetupError

if TYPE_CHECKING:
    from fractofl.client.personal.global_version import GlobalVersion
    from fractofl.client.personal.local_models import Evaluate
    from fractofl.client.personal.private_models import PrivateModels
    from fractofl.core.config.run_config import RunConfig
    from fractofl.core.learning.member_data import MemberData
    from fractofl.core.learning.training import EvalResult
    from fractofl.core.model.checkpoint import Checkpoint
    from fractofl.core.trust.registry import VersionMetadata

log = logging.getLogger("fractofl")

REPORT_FILE = "report.md"  # deployment.member_dir/report.md: the last `member report`

GLOBAL_HELP = (
    "the global model: a folder from `fractofl models export`, or a version of "
    "registry.root (number, vNNNNNN, latest, best); verified with registry.trusted_public_key"
)


def register_member_models(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``member baseline``, ``personalize``, ``report`` and ``gains``."""

    def action(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        cmd = actions.add_parser(name, help=help_text, description=description)
        cmd.add_argument("model", metavar="GLOBAL", help=GLOBAL_HELP)
        if name != "gains":
            cmd.add_argument(
                "--data",
                type=Path,
                help="this member's image folder (default: the one `member join` saved)",
            )
        else:
            cmd.add_argument(
                "--json", type=Path, metavar="FILE", help="also write every member's scores here"
            )
        cmd.add_argument("overrides", nargs="*", help="Hydra overrides (deployment.member_dir=...)")
        cmd.set_defaults(cfg=False)
        return cmd

    action(
        "baseline",
        "train the federation's model on this member's images alone (what it would get alone)",
        "Train the global version's network from fresh weights on this member's training "
        "images only, with the federated model's budget (its round times train.local_epochs "
        "epochs), score it on this member's validation split after every round's epochs, "
        "and keep it, signed with this member's own key, in deployment.member_dir/models. "
        "The model and preprocessing must be the global version's: a setting that differs "
        "is named with the override that fixes it. Nothing is sent.",
    ).set_defaults(handler=_baseline)
    action(
        "personalize",
        "make a global version this member's own (its class mix, fine-tuned) and keep it",
        "Make the global version this member's: when it was trained with "
        "train.loss=balanced_softmax it takes on this member's class mix (the frequencies "
        "of its training images); then train.personalize_epochs epochs at "
        "train.personalize_lr fine-tune train.personalize_layers (classifier or all) on "
        "them. Score it on the validation split, and keep it, signed with this member's "
        "own key, in deployment.member_dir/models; prints the command that serves it on "
        "this member's own endpoint. Nothing is sent.",
    ).set_defaults(handler=_personalize)
    action(
        "report",
        "this member's local-only, global and personalized models on its own images",
        "Score the global version and this member's newest local-only and personalized "
        "models of the same run on this member's validation split: accuracy, macro-F1, "
        "recall per class, and the gain from joining. Printed and written to "
        "deployment.member_dir/report.md.",
    ).set_defaults(handler=_report)
    action(
        "gains",
        "(simulation) every simulated member's gain from joining",
        "For every member folder of the simulation's data (data.root or data.member_dirs): "
        "a local-only baseline with the global version's budget, the global version and a "
        "personalized copy, scored on that member's validation split. A table; nothing is "
        "kept.",
    ).set_defaults(handler=_gains)


@dataclass(frozen=True)
class _MemberSide:
    """What every command here starts from: the config, the verified global version and
    the member's folder, data and private registry."""

    cfg: RunConfig
    global_version: GlobalVersion
    member_dir: Path
    data: MemberData
    private: PrivateModels


def _open(args: argparse.Namespace, what: str) -> _MemberSide:
    from fractofl.client.member import validation_gaps
    from fractofl.client.personal.global_version import open_global_version
    from fractofl.client.personal.private_models import PrivateModels
    from fractofl.client.personal.same_model import check_same_model
    from fractofl.client.supernode import MEMBER_CACHE_DIR
    from fractofl.core.learning.member_data import load_member_data

    cfg = load_run_config(args.overrides)
    member_dir = Path(cfg.deployment.member_dir)
    global_version = open_global_version(args.model, cfg)
    check_same_model(cfg, global_version.meta, what)
    data_dir = _data_dir(args.data, member_dir)
    print(f"global model {global_version.label} from {global_version.source}", flush=True)
    print(f"this member's images: {data_dir}", flush=True)
    reference_dir = _reference_dir(member_dir)
    if reference_dir is not None:
        print(f"the consortium's reference set: {reference_dir}", flush=True)
    data = load_member_data(data_dir, cfg, member_dir / MEMBER_CACHE_DIR, reference_dir)
    gap = validation_gaps(data, cfg.data.classes)
    if gap is not None:
        print(f"WARNING: {gap}", file=sys.stderr)
    private = PrivateModels.of_member(member_dir, cfg.registry.passphrase_env)
    return _MemberSide(cfg, global_version, member_dir, data, private)


def _data_dir(given: Path | None, member_dir: Path) -> Path:
    if given is None:
        saved = member_profile(member_dir).get("data")
        if not saved:
            raise MemberSetupError(
                f"give --data (this member's image folder): {member_dir / MEMBER_PROFILE} "
                "has none saved (`member join --data` saves it)"
            )
        given = Path(str(saved))
    if not given.is_dir():
        raise MemberSetupError(f"member image folder {given} does not exist (--data)")
    return given


def _reference_dir(member_dir: Path) -> Path | None:
    """The reference set `member join --reference` saved (the member trains on it in the
    federation, so its baseline and personalized models do too), or None."""
    saved = member_profile(member_dir).get("reference")
    return Path(str(saved)) if saved else None


def _baseline(args: argparse.Namespace) -> int:
    from fractofl.client.personal.local_models import (
        RoundScore,
        member_trainer,
        single_class_warning,
        train_baseline,
    )
    from fractofl.client.personal.private_models import BASELINE, private_run_id
    from fractofl.core.model.factory import checkpoint_for

    side = _open(args, "a baseline")
    _refuse_without_validation(side)
    warning = single_class_warning(side.data, side.cfg.data.classes)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    rounds = side.global_version.meta.round
    print(
        f"local-only baseline: {rounds} round(s) x {side.cfg.train.local_epochs} epoch(s) on "
        f"{len(side.data.train)} training image(s), scored on {len(side.data.val)}",
        flush=True,
    )

    def progress(score: RoundScore) -> None:
        print(
            f"  round {score.round}/{rounds}: train loss {score.train_loss:.4f}, validation "
            f"accuracy {score.result.accuracy:.3f}, macro-F1 {score.result.macro_f1:.3f}",
            flush=True,
        )

    fit = member_trainer(side.data, side.cfg)
    model, scores = train_baseline(side.cfg, rounds, fit, _scorer(side), progress)
    last = scores[-1].result
    checkpoint = checkpoint_for(
        side.cfg,
        {k: v.detach().cpu() for k, v in model.state_dict().items()},
        rounds,
        private_run_id(BASELINE, side.global_version.meta.run_id),
        _metrics(last, side.global_version),
    )
    _keep(side, checkpoint, "local-only model", last.accuracy)
    print(f"`fractofl member report {args.model}` compares it with the global model", flush=True)
    return 0


def _personalize(args: argparse.Namespace) -> int:
    from fractofl.client.personal.class_mix import version_floor
    from fractofl.client.personal.local_models import member_trainer, personalize
    from fractofl.client.personal.private_models import PERSONAL, private_run_id
    from fractofl.core.model.checkpoint import Checkpoint

    side = _open(args, "a personalized model")
    _refuse_without_validation(side)
    source = side.global_version.checkpoint
    train = side.cfg.train
    counts = side.data.own_class_counts(len(side.cfg.data.classes))
    floor = version_floor(side.global_version.meta)
    print(f"personalizing on {len(side.data.train)} training image(s):", flush=True)
    if floor is None:
        print(
            f"  class mix: kept as it is ({side.global_version.meta.name} does not record "
            "training with train.loss=balanced_softmax)",
            flush=True,
        )
    else:
        mix = ", ".join(f"{c} {n}" for c, n in zip(side.cfg.data.classes, counts, strict=True))
        print(f"  class mix: this member's ({mix}; floor {floor:g})", flush=True)
    if train.personalize_epochs:
        print(
            f"  fine-tuning {train.personalize_layers} layer(s): {train.personalize_epochs} "
            f"epoch(s) at learning rate {train.personalize_lr}",
            flush=True,
        )
    fit = member_trainer(side.data, side.cfg)
    model = personalize(source.build_model(), side.cfg, fit, side.cfg.seed, counts, floor)
    result = _scorer(side)(model)
    assert result is not None  # refused above
    checkpoint = Checkpoint(
        architecture=source.architecture,
        arch_args=dict(source.arch_args),
        classes=list(source.classes),
        preprocessing=source.preprocessing,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        round=source.round,
        run_id=private_run_id(PERSONAL, side.global_version.meta.run_id),
        metrics=_metrics(result, side.global_version),
    )
    meta = _keep(side, checkpoint, "personalized model", result.accuracy)
    print(
        f"serve it on this member's own endpoint with:\n  {side.private.serve_command(meta.name)}",
        flush=True,
    )
    return 0


def _keep(side: _MemberSide, checkpoint: Checkpoint, what: str, accuracy: float) -> VersionMetadata:
    """Sign and keep one of the member's own models in its private registry; say so."""
    meta = side.private.publish(checkpoint, side.global_version.meta)
    print(
        f"kept {what} {meta.name} in {side.private.registry.root} (signed with "
        f"{side.private.key_path}; it never leaves this machine): validation accuracy "
        f"{accuracy:.3f}",
        flush=True,
    )
    return meta


def _report(args: argparse.Namespace) -> int:
    from fractofl.client.personal.comparison import (
        GLOBAL,
        LOCAL_ONLY,
        PERSONALIZED,
        ComparedModel,
        comparison_table,
    )
    from fractofl.client.personal.private_models import BASELINE, PERSONAL
    from fractofl.core.files.atomic import atomic_write_bytes

    side = _open(args, "the report")
    _refuse_without_validation(side)
    score = _scorer(side)
    run_id = side.global_version.meta.run_id

    def own(role: str, kind: str, command: str) -> ComparedModel:
        found = side.private.latest(kind, run_id)
        if found is None:
            how = f"none for run {run_id} yet: `fractofl member {command} {args.model}` makes it"
            return ComparedModel(role, "", None, how)
        checkpoint, meta = found
        return ComparedModel(role, f"own {meta.name}", score(checkpoint.build_model()))

    rows = [
        own(LOCAL_ONLY, BASELINE, "baseline"),
        ComparedModel(
            GLOBAL,
            side.global_version.meta.name,
            score(side.global_version.checkpoint.build_model()),
        ),
        own(PERSONALIZED, PERSONAL, "personalize"),
    ]
    text = (
        f"# This member's models on its own validation split\n\nglobal model "
        f"{side.global_version.label}; {len(side.data.val)} validation image(s)\n\n"
        + comparison_table(rows, side.cfg.data.classes)
    )
    path = side.member_dir / REPORT_FILE
    atomic_write_bytes(path, text.encode())
    print(text + f"\n(written to {path})", flush=True)
    return 0


def _gains(args: argparse.Namespace) -> int:
    from fractofl.cli.datasets import member_dirs
    from fractofl.client.personal.gains import MemberGain, gains_json, gains_table, member_gains
    from fractofl.client.personal.global_version import open_global_version
    from fractofl.client.personal.same_model import check_same_model
    from fractofl.core.files.atomic import atomic_write_bytes
    from fractofl.core.learning.member_data import cache_root_for

    cfg = load_run_config(args.overrides)
    global_version = open_global_version(args.model, cfg)
    check_same_model(cfg, global_version.meta, "the members' baselines")
    folders = member_dirs(cfg)
    print(f"global model {global_version.label}; {len(folders)} member folder(s)", flush=True)

    def progress(gain: MemberGain) -> None:
        print(
            f"  {gain.member}: local-only {gain.local_only.accuracy:.3f}, global "
            f"{gain.global_model.accuracy:.3f}, personalized {gain.personalized.accuracy:.3f}",
            flush=True,
        )

    gains = member_gains(cfg, global_version, folders, cache_root_for(cfg), progress)
    print(gains_table(gains), flush=True)
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(gains_json(gains), indent=2).encode())
    behind = [g.member for g in gains if g.gain < 0]
    if behind:
        print(f"members the global model serves worse than their own: {', '.join(behind)}")
    return 0


def _scorer(side: _MemberSide) -> Evaluate:
    import functools

    from fractofl.client.personal.comparison import score_on

    return functools.partial(score_on, side.data, side.cfg)


def _refuse_without_validation(side: _MemberSide) -> None:
    if len(side.data.val) == 0:
        raise MemberSetupError(
            f"this member has no validation images, so its models cannot be scored; add "
            f"images (data.val_fraction={side.cfg.data.val_fraction} of them are held out)"
        )


def _metrics(result: EvalResult, global_version: GlobalVersion) -> dict[str, float]:
    """What a member's own model's signed metadata says of it."""
    return {
        "val_accuracy": result.accuracy,
        "val_macro_f1": result.macro_f1,
        "val_loss": result.loss,
        "val_examples": float(result.examples),
        "global_version": float(global_version.meta.version),
    }
