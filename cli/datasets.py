"""The data a run config asks for: a synthetic set, generated once and then reused, or
existing member folders, resolved and checked (and never written)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from fractofl.cli.progress import Progress
from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.member_folders import MemberFoldersError, resolve_member_folders
from fractofl.core.synth.dataset import SynthSpec, generate_dataset, is_generated, member_dir
from fractofl.core.synth.style import SynthStyle

log = logging.getLogger("fractofl")


def synth_spec(cfg: RunConfig) -> SynthSpec:
    """The generator spec of ``data`` and ``federation.members``."""
    return SynthSpec(
        classes=tuple(cfg.data.classes),
        members=cfg.federation.members,
        partition=cfg.data.partition,
        alpha=cfg.data.alpha,
        per_class=cfg.data.synth.per_class,
        test_per_class=cfg.data.synth.test_per_class,
        seed=cfg.data.synth.seed,
        min_per_member=cfg.data.min_per_member,
        style=SynthStyle(**cfg.data.synth.style),
        instrument_shift=cfg.data.synth.instrument_shift,
    )


def ensure_synthetic_data(cfg: RunConfig) -> Path:
    """Generate the synthetic set under ``data.root`` unless it is already there."""
    root = Path(cfg.data.root)
    spec = synth_spec(cfg)
    if is_generated(root, spec):
        log.info("reusing synthetic data set in %s", root)
        return root
    log.info(
        "generating synthetic SEM data set in %s: %d members, %s split (alpha=%s), "
        "%d train + %d test images per class",
        root,
        spec.members,
        spec.partition,
        spec.alpha,
        spec.per_class,
        spec.test_per_class,
    )
    manifest = generate_dataset(
        root, spec, progress=Progress("synth"), overwrite=cfg.data.synth.overwrite
    )
    for folder, counts in manifest["counts"].items():
        log.info("  %-22s %s", folder, " ".join(f"{k}={v}" for k, v in counts.items()))
    return root


def resolve_member_folders_of(cfg: RunConfig, requested_members: int | None = None) -> RunConfig:
    """``data.source=folders``: the config with the member folders and the test folder
    resolved and checked, listed (absolute) in ``data.member_dirs`` and ``data.test_dir``,
    and ``federation.members`` their number (``requested_members``, when the command line
    set it, must agree). Reads only."""
    data = cfg.data
    folders = resolve_member_folders(
        Path(data.root) if data.root else None,
        [Path(p) for p in data.member_dirs],
        Path(data.test_dir),
        data.classes,
    )
    count = len(folders.members)
    if requested_members is not None and requested_members != count:
        raise MemberFoldersError(
            f"federation.members={requested_members}, but data=folders found {count} member "
            f"folders ({', '.join(p.name for p in folders.members)}); leave "
            "federation.members out (it follows the folders) or change the folders"
        )
    log.info("%d member folders (read only), test folder %s", count, folders.test)
    for member in folders.members:
        log.info("  %s", member)
    return replace(
        cfg,
        data=replace(
            data, member_dirs=[str(p) for p in folders.members], test_dir=str(folders.test)
        ),
        federation=replace(cfg.federation, members=count),
    )


def member_dirs(cfg: RunConfig) -> list[Path]:
    """The members' ImageFolder trees: ``data.member_dirs``, or the synthetic set's."""
    if cfg.data.member_dirs:
        return [Path(p) for p in cfg.data.member_dirs]
    return [member_dir(Path(cfg.data.root), m) for m in range(cfg.federation.members)]
