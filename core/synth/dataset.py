"""Writing a synthetic SEM fracture data set: per-member ImageFolder trees and a test set.

Layout of the output folder::

    manifest.json                      parameters, counts and a digest of the set
    members/member-00/<class>/*.png    one ImageFolder tree per simulated member
    coordinator-test/<class>/*.png     the coordinator's held-out test set

Every image is drawn from its own random stream, derived from (seed, split, index),
so the set is identical for a seed whatever the partition or the order of work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fractofl.core.config.taxonomy import validate_classes
from fractofl.core.images.partition import partition_indices
from fractofl.core.synth.sample import render_sample
from fractofl.core.synth.style import SynthStyle

MANIFEST = "manifest.json"
MEMBERS_DIR = "members"
TEST_DIR = "coordinator-test"
_TRAIN_STREAM, _TEST_STREAM = 0, 1

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthSpec:
    """Everything that determines a synthetic data set."""

    classes: tuple[str, ...]
    members: int
    partition: str
    alpha: float
    per_class: int
    test_per_class: int
    seed: int
    min_per_member: int
    style: SynthStyle

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the manifest."""
        values = asdict(self)
        values["classes"] = list(self.classes)
        return values

    def digest(self) -> str:
        """Hash of the spec: a folder whose manifest carries it need not be regenerated."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def member_dir(root: Path, member: int) -> Path:
    """The ImageFolder tree of simulated member ``member`` (0-based)."""
    return root / MEMBERS_DIR / f"member-{member:02d}"


def holdout_dir(root: Path) -> Path:
    """The coordinator's held-out test set."""
    return root / TEST_DIR


def is_generated(root: Path, spec: SynthSpec) -> bool:
    """True when ``root`` already holds the data set of exactly this spec."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return bool(json.loads(manifest.read_text()).get("digest") == spec.digest())
    except (OSError, ValueError):
        return False


class ForeignFolderError(FileExistsError):
    """The output folder holds files that this generator did not write."""


def _refuse_foreign_folder(root: Path) -> None:
    # Regenerating wipes the old set: never do that to a folder of someone's real images.
    if root.is_dir() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise ForeignFolderError(
            f"{root} is not empty and has no {MANIFEST}, so it was not written by "
            "`fractofl synth`; choose an empty or new folder (data.root)"
        )


def render_image(spec: SynthSpec, stream: int, index: int, label: int) -> np.ndarray:
    """The uint8 image number ``index`` of a split (0 train pool, 1 test)."""
    rng = np.random.default_rng([spec.seed, stream, index])
    return render_sample(spec.classes[label], spec.style, rng, spec.classes)


def pool_labels(classes: Sequence[str], per_class: int) -> np.ndarray:
    """Labels of a pool with ``per_class`` images of each class, class-major order."""
    return np.repeat(np.arange(len(classes)), per_class)


def generate_dataset(
    root: Path, spec: SynthSpec, progress: Progress | None = None
) -> dict[str, Any]:
    """Write the data set of ``spec`` under ``root`` (replacing what was there).

    Returns the manifest: spec, digest and images per member and class.
    """
    _refuse_foreign_folder(root)
    validate_classes(spec.classes)
    train_labels = pool_labels(spec.classes, spec.per_class)
    test_labels = pool_labels(spec.classes, spec.test_per_class)
    parts = partition_indices(
        train_labels, spec.members, spec.partition, spec.alpha, spec.seed, spec.min_per_member
    )
    for stale in (root / MEMBERS_DIR, root / TEST_DIR, root / MANIFEST):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()

    total = len(train_labels) + len(test_labels)
    done = 0
    counts: dict[str, dict[str, int]] = {}
    jobs: list[tuple[Path, int, int, np.ndarray]] = [
        (member_dir(root, m), _TRAIN_STREAM, m, part) for m, part in enumerate(parts)
    ]
    jobs.append((holdout_dir(root), _TEST_STREAM, -1, np.arange(len(test_labels))))
    for folder, stream, _, indices in jobs:
        labels = train_labels if stream == _TRAIN_STREAM else test_labels
        per_class = dict.fromkeys(spec.classes, 0)
        for index in indices:
            label = int(labels[index])
            name = spec.classes[label]
            target = folder / name / f"{name}-{stream}-{index:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render_image(spec, stream, int(index), label)).save(target)
            per_class[name] += 1
            done += 1
            if progress is not None:
                progress(done, total)
        counts[folder.relative_to(root).as_posix()] = per_class

    manifest = {"spec": spec.to_dict(), "digest": spec.digest(), "counts": counts}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
