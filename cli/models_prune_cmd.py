"""``fractofl models prune [--dry-run]`` and ``fractofl models unpin VERSION``: registry
retention (``registry.retention``, :mod:`fractofl.core.trust.retention`) and the record
of versions in use (:mod:`fractofl.core.trust.pins`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fractofl.cli.config import compose_config, to_run_config

if TYPE_CHECKING:  # torch: imported when a command runs
    from fractofl.core.config.run_config import RetentionConfig
    from fractofl.core.trust.pins import Pin
    from fractofl.core.trust.registry import ModelRegistry


def register(actions: argparse._SubParsersAction) -> None:
    """Add ``prune`` and ``unpin`` to the actions of ``fractofl models``."""

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = actions.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--registry", type=Path, metavar="DIR", help="default: registry.root")
        cmd.set_defaults(cfg=False)
        return cmd

    prune = action(
        "prune",
        "remove the versions registry.retention does not keep (newest N, best, in use)",
    )
    prune.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be removed and why each kept version is kept; change nothing",
    )
    prune.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    prune.set_defaults(handler=_prune)
    unpin = action(
        "unpin",
        "stop keeping VERSION for its exports and packages (endpoints: with --use only)",
    )
    unpin.add_argument("version", help="number or vNNNNNN")
    unpin.add_argument(
        "--use",
        metavar="USE",
        help="only this use, as `models prune --dry-run` shows it (e.g. endpoint:NAME)",
    )
    unpin.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    unpin.set_defaults(handler=_unpin)


def _open(args: argparse.Namespace) -> tuple[ModelRegistry, RetentionConfig]:
    from fractofl.core.trust.registry import ModelRegistry

    registry = to_run_config(compose_config(args.overrides), training=False).registry
    return ModelRegistry(args.registry or Path(registry.root)), registry.retention


def _prune(args: argparse.Namespace) -> int:
    from fractofl.core.trust.retention import (
        megabytes,
        prune,
        remove_stale_folders,
        stale_folders,
    )

    registry, retention = _open(args)
    would = "would remove" if args.dry_run else "removed"
    print(f"registry {registry.root}: {_policy(retention)}")
    stale = stale_folders(registry.root) if args.dry_run else remove_stale_folders(registry.root)
    for folder in stale:
        print(f"{would} {folder.name} (left by a crashed publish or prune)")
    result = prune(registry, retention, dry_run=args.dry_run)
    gone = result.plan.removals if args.dry_run else list(result.removed)
    for decision in result.plan.decisions:
        if decision.keep:
            print(f"{'keep':<12} {decision.name}  {'; '.join(decision.reasons)}")
        elif decision in gone:
            print(f"{would:<12} {decision.name}  ({megabytes(decision.size_bytes)})")
    freed = megabytes(sum(d.size_bytes for d in gone))
    if args.dry_run:
        print(f"dry run: would remove {len(gone)} version(s), {freed}; nothing was removed")
    else:
        print(f"removed {len(gone)} version(s), {freed} freed; kept {len(result.plan.kept)}")
    return 0


def _policy(retention: RetentionConfig) -> str:
    if retention.keep_last == 0:
        return "retention off (registry.retention.keep_last=0): every version is kept"
    best = (
        f", the best by {retention.best_metric} ({retention.best_mode})"
        if retention.best_metric
        else ""
    )
    return f"keeping the newest {retention.keep_last}{best} and the versions in use"


def _unpin(args: argparse.Namespace) -> int:
    from fractofl.core.trust.pins import read_pins, remove_pins

    registry, _ = _open(args)
    name = registry.folder(args.version).name
    pins = [p for p in read_pins(registry.root) if p.version == name]
    if args.use is not None:
        chosen = [p for p in pins if p.use == args.use]
        if not chosen:
            uses = ", ".join(p.use for p in pins) or "none"
            print(
                f"fractofl: error: {name} has no use {args.use!r}; its uses: {uses}",
                file=sys.stderr,
            )
            return 1
    else:
        chosen = [p for p in pins if _removable_without_naming(p)]
        for pin in pins:
            if pin not in chosen:
                print(f"still in use: {name} by {pin.use} ({_how_to_release(pin)})")
    removed = remove_pins(registry.root, lambda p: p in chosen)
    if removed:
        print(f"unpinned {name}: {', '.join(p.use for p in removed)}")
    else:
        print(f"{name}: nothing to unpin")
    return 0


def _removable_without_naming(pin: Pin) -> bool:
    """Exports and packages, and local endpoints that have stopped; a live endpoint only
    when its use is named (``--use``)."""
    return pin.kind in ("export", "package") or not pin.holds()


def _how_to_release(pin: Pin) -> str:
    if pin.kind == "endpoint":
        endpoint = pin.use.partition(":")[2]
        return f"`fractofl serve delete {endpoint}` releases it, or --use {pin.use}"
    return f"until that process stops, or --use {pin.use}"
