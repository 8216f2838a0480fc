"""``fractofl models list | show | verify | export``: the signed model registry (``prune``
and ``unpin``: :mod:`fractofl.cli.models_prune_cmd`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fractofl.cli import models_prune_cmd
from fractofl.cli.config import compose_config, to_run_config
from fractofl.cli.in_use import path_use, recording_use

# The registry reads checkpoints (torch): imported where a command uses it, so that the
# `fractofl` command starts without torch.
VERSION_HELP = "number, vNNNNNN, latest or best (by registry.retention.best_metric)"

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from fractofl.core.config.run_config import RetentionConfig
    from fractofl.core.trust.registry import ModelRegistry


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``models list | show | verify | export | prune | unpin`` to ``fractofl``."""
    models = sub.add_parser("models", help="list, show, verify, export and prune published models")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = actions.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--registry", type=Path, metavar="DIR", help="default: registry.root")
        cmd.add_argument(
            "--public-key",
            type=Path,
            metavar="FILE",
            help="trusted public key (default: registry.trusted_public_key)",
        )
        cmd.set_defaults(cfg=False)
        return cmd

    listing = action("list", "one line per version, with whether its signature verifies")
    listing.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    listing.set_defaults(handler=_list)
    show = action("show", "print a version's metadata as JSON (its verification on stderr)")
    show.add_argument("version", help=VERSION_HELP)
    show.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    show.set_defaults(handler=_show)
    verify = action("verify", "check signatures and weights; exit 1 if any version fails")
    verify.add_argument(
        "targets",
        nargs="*",
        metavar="VERSION",
        help="versions to check (default: latest); Hydra overrides key=value may follow",
    )
    verify.add_argument("--all", action="store_true", help="check every version")
    verify.set_defaults(handler=_verify, overrides=[])
    export = action("export", "verify a version and copy it, with the public key, to OUT")
    export.add_argument("version", help=VERSION_HELP)
    export.add_argument("out", type=Path, help="output folder")
    export.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    export.set_defaults(handler=_export)
    models_prune_cmd.register(actions)


@dataclass(frozen=True)
class _Opened:
    """The registry, the trusted key's path and what ``best`` means, from the config and
    the options."""

    registry: ModelRegistry
    key_path: Path
    retention: RetentionConfig

    def name(self, version: int | str) -> str:
        """The folder name of ``version`` (a number, vNNNNNN, latest or best)."""
        from fractofl.core.trust.version_choice import chosen_version

        return chosen_version(self.registry, version, self.retention)


def _open(args: argparse.Namespace, overrides: list[str]) -> _Opened:
    from fractofl.core.trust.registry import ModelRegistry

    registry = to_run_config(compose_config(overrides)).registry
    root = args.registry or Path(registry.root)
    key_path = args.public_key or Path(registry.trusted_public_key)
    return _Opened(ModelRegistry(root), key_path, registry.retention)


def _list(args: argparse.Namespace) -> int:
    opened = _open(args, args.overrides)
    registry, key_path = opened.registry, opened.key_path
    numbers = registry.version_numbers()
    if not numbers:
        print(f"registry {registry.root} has no versions")
        return 0
    trusted = _trusted_or_none(key_path)
    best = _best_or_none(opened)
    header = ["version", "round", "run id", "created", "test acc", "verified", "best"]
    rows, problems = [], []
    for number in numbers:
        row, problem = _row(registry, number, trusted)
        rows.append([*row, "best" if row[0] == best else ""])
        problems += [problem] if problem else []
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for problem in problems:
        print(f"fractofl: {problem}", file=sys.stderr)
    return 0


def _best_or_none(opened: _Opened) -> str | None:
    """The version ``best`` names, or None (with the reason on stderr) when none is."""
    from fractofl.core.trust.registry import RegistryError

    try:
        return opened.name("best")
    except RegistryError as exc:
        print(f"fractofl: no best version: {exc}", file=sys.stderr)
        return None


def _row(
    registry: ModelRegistry, number: int, trusted: Ed25519PublicKey | None
) -> tuple[list[str], str]:
    """One table row and, when the version fails, why."""
    from fractofl.core.trust.registry import RegistryError, version_name

    problem, verified = "", "-"
    if trusted is not None:
        try:
            registry.verify(number, trusted)
            verified = "yes"
        except RegistryError as exc:
            problem, verified = str(exc), "NO"
    try:
        meta = registry.metadata(number)
    except RegistryError as exc:
        return [version_name(number), "?", "?", "?", "?", "NO"], problem or str(exc)
    accuracy = meta.metrics.get("test_accuracy")
    shown = "-" if accuracy is None else f"{accuracy:.3f}"
    return [
        version_name(number),
        str(meta.round),
        meta.run_id,
        meta.created,
        shown,
        verified,
    ], problem


def _trusted_or_none(key_path: Path) -> Ed25519PublicKey | None:
    from fractofl.core.trust.signing import SigningKeyError, load_public_key

    try:
        return load_public_key(key_path)
    except SigningKeyError as exc:
        print(f"fractofl: not verifying: {exc}", file=sys.stderr)
        return None


def _show(args: argparse.Namespace) -> int:
    from fractofl.core.trust.registry import ModelVerificationError
    from fractofl.core.trust.signing import fingerprint

    opened = _open(args, args.overrides)
    registry, key_path = opened.registry, opened.key_path
    meta = registry.metadata(opened.name(args.version))
    print(json.dumps(meta.to_dict(), indent=2, sort_keys=True))
    trusted = _trusted_or_none(key_path)
    if trusted is not None:
        try:
            registry.verify(meta.version, trusted)
            print(f"verified: yes, signed by {fingerprint(trusted)}", file=sys.stderr)
        except ModelVerificationError as exc:
            print(f"verified: NO: {exc}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from fractofl.core.trust.registry import ModelVerificationError
    from fractofl.core.trust.signing import load_public_key
    from fractofl.serving.client import describe_contributors

    versions = [t for t in args.targets if "=" not in t]
    overrides = [*(t for t in args.targets if "=" in t), *args.overrides]
    if args.all and versions:
        print("fractofl: error: give VERSION(s) or --all, not both", file=sys.stderr)
        return 2
    opened = _open(args, overrides)
    registry, trusted = opened.registry, load_public_key(opened.key_path)
    targets: list[int | str] = [opened.name(v) for v in versions] or ["latest"]
    if args.all:
        targets = list(registry.version_numbers())
        if not targets:
            print(f"registry {registry.root} has no versions")
            return 0
    failed = 0
    for target in targets:
        try:
            meta = registry.verify(target, trusted)
        except ModelVerificationError as exc:
            print(f"fractofl: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"{meta.name}: ok (round {meta.round}, run {meta.run_id}, signed by {meta.signer}; "
            f"members: {describe_contributors(meta.contributors)})"
        )
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    from fractofl.core.trust.signing import load_public_key

    opened = _open(args, args.overrides)
    registry, name = opened.registry, opened.name(args.version)
    trusted = load_public_key(opened.key_path)
    with recording_use(registry.root, name, path_use("export", args.out)):  # kept by retention
        out = registry.export(name, args.out, trusted)
    print(f"exported {name} to {out}")
    return 0
