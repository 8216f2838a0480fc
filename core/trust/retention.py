"""Registry retention: which versions are kept, removing the others crash-safely, and
clearing the hidden folders that crashed publishes and prunes leave.

Kept (``registry.retention``, :class:`~fractofl.core.config.run_config.RetentionConfig`):
the newest ``keep_last`` versions (0: every version), the best one by ``best_metric``
(a version without the metric is never the best), every version in use
(:mod:`fractofl.core.trust.pins`), and any version whose metadata is unreadable (it is
not known what it is; ``fractofl models verify`` says why). The newest version is
always among them, so version numbers are never reused and a prune never empties the
registry.

A version is removed by renaming its folder to a hidden ``.removing-<name>-<random>``
first (the registry lists only ``vNNNNNN`` folders), then deleting that: a crash midway
leaves a hidden folder, never a half-deleted version that looks valid.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fractofl.core.config.run_config import RetentionConfig, RunConfigError, check_retention
from fractofl.core.files.atomic import fsync_dir
from fractofl.core.trust.pins import Pin, read_pins, registry_lock
from fractofl.core.trust.registry import (
    PUBLISH_PREFIX,
    ModelRegistry,
    RegistryError,
    VersionMetadata,
    version_name,
)

log = logging.getLogger("fractofl")

REMOVING_PREFIX = ".removing-"
# A publish writes its hidden staging folder within seconds (a ResNet-50 checkpoint is
# about 100 MB) and renames it at once, so a ``.publish-*`` folder untouched for an hour
# belongs to a publisher that crashed (or is stopped: its publish then fails cleanly).
# Age, not the owner's process id: the registry may be shared by several machines, and
# the staging folder's name does not say which process made it.
STALE_PUBLISH_AGE_S = 3600.0


class RetentionError(RegistryError):
    """A prune was refused (bad setting, unknown metric, nothing would remain); nothing
    was removed."""


@dataclass(frozen=True)
class Decision:
    """What retention decides for one version: kept for ``reasons``, or removed."""

    version: int
    size_bytes: int
    reasons: tuple[str, ...]

    @property
    def name(self) -> str:
        """The version folder's name, e.g. ``v000003``."""
        return version_name(self.version)

    @property
    def keep(self) -> bool:
        """Kept when there is any reason to."""
        return bool(self.reasons)


@dataclass(frozen=True)
class PrunePlan:
    """Every version's decision, ascending."""

    decisions: tuple[Decision, ...]

    @property
    def removals(self) -> list[Decision]:
        """The versions that go."""
        return [d for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[Decision]:
        """The versions that stay, each with its reasons."""
        return [d for d in self.decisions if d.keep]


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (the plan's removals that were still there) and freed."""

    plan: PrunePlan
    removed: tuple[Decision, ...]

    @property
    def bytes_freed(self) -> int:
        """Bytes of the removed version folders."""
        return sum(d.size_bytes for d in self.removed)


def plan_prune(
    registry: ModelRegistry, retention: RetentionConfig, pins: Sequence[Pin] = ()
) -> PrunePlan:
    """Decide, without changing anything, which versions ``retention`` keeps and why.

    Raises
    ------
    RetentionError
        If a setting is invalid, no version carries ``best_metric``, or the newest
        version (the last one left, at least) would go.
    """
    try:
        check_retention(retention)
    except RunConfigError as exc:
        raise RetentionError(str(exc)) from None
    numbers = registry.version_numbers()
    reasons: dict[int, list[str]] = {n: [] for n in numbers}
    if retention.keep_last == 0:
        for number in numbers:
            reasons[number].append("every version is kept (registry.retention.keep_last=0)")
        return _plan(registry, reasons)
    readable = _readable_versions(registry, numbers, reasons)
    for number in numbers[-retention.keep_last :]:
        reasons[number].append(f"newest {retention.keep_last}")
    best = best_version(registry, readable, retention)
    if best is not None:
        value = best.metrics[retention.best_metric]
        reasons[best.version].append(f"best {retention.best_metric}={value:.4g}")
    for pin in pins:
        number = _version_number(pin.version)
        if number in reasons and pin.holds():
            reasons[number].append(f"in use: {pin.use}")
    if numbers and not reasons[numbers[-1]]:  # unreachable while keep_last >= 1
        raise RetentionError(
            f"refusing to remove the newest version of {registry.root}: it always stays, "
            "so the registry is never emptied and no version number is reused"
        )
    return _plan(registry, reasons)


def prune(
    registry: ModelRegistry, retention: RetentionConfig, *, dry_run: bool = False
) -> PruneResult:
    """Remove the versions ``retention`` does not keep (see :func:`plan_prune`).

    The plan is made and the version folders are renamed away under the registry's lock,
    so a pin written meanwhile (:func:`~fractofl.core.trust.pins.add_pin`) is either seen
    or finds its version gone. ``dry_run``: plan only.
    """
    root = registry.root
    if dry_run or not root.is_dir():
        return PruneResult(plan_prune(registry, retention, _pins(root)), ())
    hidden: list[tuple[Decision, Path]] = []
    with registry_lock(root):
        plan = plan_prune(registry, retention, _pins(root))
        try:
            for decision in plan.removals:
                moved = _hide(root, decision.name)
                if moved is not None:
                    hidden.append((decision, moved))
        except OSError:
            for decision, moved in hidden:  # all or nothing: put back what was hidden
                os.rename(moved, root / decision.name)
            raise
        finally:
            fsync_dir(root)
    for _, folder in hidden:
        shutil.rmtree(folder, ignore_errors=True)  # what is left, a later sweep clears
    return PruneResult(plan, tuple(d for d, _ in hidden))


def stale_folders(root: Path, now: float | None = None) -> list[Path]:
    """The hidden folders in ``root`` that no one is using: every ``.removing-*`` one
    (a prune renames and deletes in one go; a second deleter is harmless) and the
    ``.publish-*`` ones untouched for :data:`STALE_PUBLISH_AGE_S`."""
    if not Path(root).is_dir():
        return []
    now = time.time() if now is None else now
    stale = []
    for path in sorted(Path(root).iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        removing = path.name.startswith(REMOVING_PREFIX)
        publishing = path.name.startswith(PUBLISH_PREFIX)
        if removing or (publishing and now - _last_touched(path) > STALE_PUBLISH_AGE_S):
            stale.append(path)
    return stale


def remove_stale_folders(root: Path) -> list[Path]:
    """Delete :func:`stale_folders` and return them."""
    stale = stale_folders(root)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder`` (0 when it has gone)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                continue
    return total


def megabytes(size_bytes: int) -> str:
    """``45213184`` -> ``"45.2 MB"``."""
    return f"{size_bytes / 1e6:.1f} MB"


def _plan(registry: ModelRegistry, reasons: dict[int, list[str]]) -> PrunePlan:
    return PrunePlan(
        tuple(
            Decision(n, folder_bytes(registry.root / version_name(n)), tuple(reasons[n]))
            for n in sorted(reasons)
        )
    )


def _readable_versions(
    registry: ModelRegistry, numbers: list[int], reasons: dict[int, list[str]]
) -> list[VersionMetadata]:
    readable = []
    for number in numbers:
        try:
            readable.append(registry.metadata(number))
        except RegistryError:
            reasons[number].append("unreadable metadata (see `fractofl models verify`)")
    return readable


def best_version(
    registry: ModelRegistry, versions: list[VersionMetadata], retention: RetentionConfig
) -> VersionMetadata | None:
    """The best version by the metric (the newest among equals), or ``None`` when no
    metric is set or there are no versions."""
    metric = retention.best_metric
    if not metric or not versions:
        return None
    scored = [m for m in versions if _finite(m.metrics.get(metric))]
    if not scored:
        carried = sorted({name for m in versions for name in m.metrics})
        raise RetentionError(
            f"registry.retention.best_metric={metric!r}: no version in {registry.root} "
            f"carries it; they carry {', '.join(carried) or 'no metrics'}. Set one of "
            "those, or best_metric='' to keep no best version"
        )
    sign = 1.0 if retention.best_mode == "max" else -1.0
    return max(scored, key=lambda m: (sign * m.metrics[metric], m.version))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _version_number(name: str) -> int | None:
    return int(name[1:]) if name[:1] == "v" and name[1:].isdigit() else None


def _pins(root: Path) -> list[Pin]:
    return read_pins(root) if root.is_dir() else []


def _hide(root: Path, name: str) -> Path | None:
    """Rename a version folder to a hidden one; ``None`` when it had gone already."""
    hidden = root / f"{REMOVING_PREFIX}{name}-{secrets.token_hex(4)}"
    try:
        os.rename(root / name, hidden)
    except FileNotFoundError:
        return None  # another prune took it
    return hidden


def _last_touched(folder: Path) -> float:
    """The newest modification time of ``folder`` and its entries (infinitely recent
    when it cannot be read, e.g. its publisher has just renamed it into place)."""
    try:
        return max([folder.stat().st_mtime, *(e.stat().st_mtime for e in folder.iterdir())])
    except OSError:
        return math.inf
