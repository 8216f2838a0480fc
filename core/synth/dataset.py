"""Writing a synthetic SEM fracture data set: per-member ImageFolder trees and a test set.

Layout of the output folder::

    manifest.json                      parameters, counts and a digest of the set
    members/member-00/<class>/*.png    one ImageFolder tree per simulated member
    coordinator-test/<class>/*.png     the coordinator's held-out test set

Every image is drawn from its own random stream, derived from (seed, split, index),
so the set is identical for a seed whatever the partition or the order of work.

Nothing is written before everything the set needs has been checked (classes the
generator can draw, a split that gives every member enough images, permission and free
space), and the set is built in a hidden sibling folder that replaces ``root`` only when
complete: a failure part-way leaves no half-written folder. An existing set made with
other settings, or a folder of someone's own images, is never replaced unless asked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fractofl.core.config.taxonomy import validate_classes
from fractofl.core.files.whole_folder import check_can_write, folder_written_whole
from fractofl.core.images.partition import partition_indices
from fractofl.core.synth.instruments import InstrumentProfile, member_profiles
from fractofl.core.synth.sample import render_sample
from fractofl.core.synth.style import SynthStyle
from fractofl.core.synth.textures import TEXTURES

MANIFEST = "manifest.json"
MEMBERS_DIR = "members"
TEST_DIR = "coordinator-test"
_TRAIN_STREAM, _TEST_STREAM = 0, 1
_REFERENCE_STREAM = 3  # a reference set's images: no member's, not the coordinator's test set
REFERENCE_MANIFEST = "reference.json"  # marks a folder `synth --reference` wrote
_INSTRUMENT_STREAM = 2  # an image's instrument noise: its own stream, not its texture's
# Disk estimate per image: its pixels (8-bit PNG of noisy texture hardly compresses) plus
# the PNG and file-system overhead; the manifest and folders are negligible.
PNG_OVERHEAD_BYTES = 4096
# The configuration key behind each field of a SynthSpec, for messages.
SPEC_SETTINGS = {
    "classes": "data.classes",
    "members": "federation.members",
    "partition": "data.partition",
    "alpha": "data.alpha",
    "per_class": "data.synth.per_class",
    "test_per_class": "data.synth.test_per_class",
    "seed": "data.synth.seed",
    "min_per_member": "data.min_per_member",
    "style": "data.synth.style",
    "instrument_shift": "data.synth.instrument_shift",
}

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
    instrument_shift: float = 0.0
    """How far apart the members' microscopes are (0: alike; :mod:`.instruments`)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the manifest (without an instrument shift of 0,
        so sets made before it existed keep their digest)."""
        values = asdict(self)
        values["classes"] = list(self.classes)
        if not self.instrument_shift:
            del values["instrument_shift"]
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


class OtherSynthSetError(FileExistsError):
    """The output folder holds a synthetic set made with other settings."""


class UnknownSynthClassError(ValueError):
    """The generator has no texture for some of the classes asked for."""


class SynthSettingsError(ValueError):
    """A generator setting is out of its range; the message names the setting."""


def check_synthesizable(spec: SynthSpec) -> None:
    """Raise :class:`UnknownSynthClassError` when a class has no synthetic texture, and
    :class:`SynthSettingsError` when ``data.synth.instrument_shift`` is outside 0 to 1."""
    if not 0.0 <= spec.instrument_shift <= 1.0:
        raise SynthSettingsError(
            f"data.synth.instrument_shift={spec.instrument_shift} must be between 0 (every "
            "member's microscope alike) and 1 (strong shift); nothing was written"
        )
    unknown = [name for name in spec.classes if name not in TEXTURES]
    if unknown:
        raise UnknownSynthClassError(
            f"the synthetic generator draws only {', '.join(TEXTURES)}; data.classes also "
            f"names {', '.join(unknown)}. For your own images use data=folders (README: "
            "'Your own images'); nothing was written"
        )


def spec_differences(root: Path, spec: SynthSpec) -> dict[str, tuple[Any, Any]]:
    """The settings (by configuration key) in which the set under ``root`` differs from
    ``spec``: key -> (in the folder, asked); empty when there is no set or it is the same."""
    try:
        stored = json.loads((root / MANIFEST).read_text())["spec"]
    except (OSError, ValueError, KeyError):
        return {}
    asked = spec.to_dict()
    return {
        SPEC_SETTINGS.get(field, field): (stored.get(field), value)
        for field, value in asked.items()
        if stored.get(field) != value
    }


def check_replaceable(root: Path, spec: SynthSpec, overwrite: bool) -> None:
    """Refuse to replace someone's own images, or (unless ``overwrite``) a synthetic set
    made with other settings, which running members may be reading."""
    if not root.is_dir() or not any(root.iterdir()):
        return
    if not (root / MANIFEST).is_file():
        raise ForeignFolderError(
            f"{root} is not empty and has no {MANIFEST}, so it was not written by "
            "`fractofl synth`. If these are your own member folders, use data=folders "
            "(README: 'Your own images'); otherwise choose an empty or new folder (data.root)"
        )
    differences = spec_differences(root, spec)
    if differences and not overwrite:
        listed = ", ".join(
            f"{key}={old!r} (asked: {new!r})" for key, (old, new) in differences.items()
        )
        raise OtherSynthSetError(
            f"{root} holds a synthetic set made with {listed}; replacing it would change "
            "the images that members of a running federation may be reading. Choose "
            "another data.root, or replace it with data.synth.overwrite=true "
            "(`fractofl synth --overwrite`)"
        )


def estimated_bytes(spec: SynthSpec) -> int:
    """About how much disk the set of ``spec`` takes."""
    images = len(spec.classes) * (spec.per_class + spec.test_per_class)
    return images * (spec.style.image_size**2 + PNG_OVERHEAD_BYTES)


def render_image(spec: SynthSpec, stream: int, index: int, label: int) -> np.ndarray:
    """The uint8 image number ``index`` of a split (0 train pool, 1 test)."""
    rng = np.random.default_rng([spec.seed, stream, index])
    return render_sample(spec.classes[label], spec.style, rng, spec.classes)


def pool_labels(classes: Sequence[str], per_class: int) -> np.ndarray:
    """Labels of a pool with ``per_class`` images of each class, class-major order."""
    return np.repeat(np.arange(len(classes)), per_class)


def generate_dataset(
    root: Path, spec: SynthSpec, progress: Progress | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Write the data set of ``spec`` under ``root``, whole or not at all.

    ``overwrite`` allows replacing a synthetic set made with other settings. Returns the
    manifest: spec, digest and images per member and class.
    """
    validate_classes(spec.classes)
    check_synthesizable(spec)
    check_replaceable(root, spec, overwrite)
    train_labels = pool_labels(spec.classes, spec.per_class)
    test_labels = pool_labels(spec.classes, spec.test_per_class)
    parts = partition_indices(
        train_labels, spec.members, spec.partition, spec.alpha, spec.seed, spec.min_per_member
    )
    check_can_write(root, estimated_bytes(spec))
    profiles = member_profiles(spec.members, spec.instrument_shift, spec.seed)
    with folder_written_whole(root) as staging:
        counts = _write_images(staging, spec, parts, profiles, train_labels, test_labels, progress)
        manifest = {"spec": spec.to_dict(), "digest": spec.digest(), "counts": counts}
        if spec.instrument_shift:
            manifest["instruments"] = {
                member_dir(root, m).name: profile.to_dict() for m, profile in enumerate(profiles)
            }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _write_images(
    root: Path,
    spec: SynthSpec,
    parts: Sequence[np.ndarray],
    profiles: Sequence[InstrumentProfile],
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    progress: Progress | None,
) -> dict[str, dict[str, int]]:
    """Render every member's images through its instrument ``profiles``, and the test
    set's, under ``root``; counts per folder."""
    total = len(train_labels) + len(test_labels)
    done = 0
    counts: dict[str, dict[str, int]] = {}
    jobs: list[tuple[Path, int, np.ndarray, InstrumentProfile]] = [
        (member_dir(root, m), _TRAIN_STREAM, part, profiles[m]) for m, part in enumerate(parts)
    ]
    test = (holdout_dir(root), _TEST_STREAM, np.arange(len(test_labels)), InstrumentProfile())
    jobs.append(test)  # the coordinator's test set is imaged by no member's instrument
    for folder, stream, indices, instrument in jobs:
        labels = train_labels if stream == _TRAIN_STREAM else test_labels
        per_class = dict.fromkeys(spec.classes, 0)
        for index in indices:
            label = int(labels[index])
            name = spec.classes[label]
            target = folder / name / f"{name}-{stream}-{index:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            image = render_image(spec, stream, int(index), label)
            noise = np.random.default_rng([spec.seed, stream, int(index), _INSTRUMENT_STREAM])
            Image.fromarray(instrument.apply(image, noise)).save(target)
            per_class[name] += 1
            done += 1
            if progress is not None:
                progress(done, total)
        counts[folder.relative_to(root).as_posix()] = per_class
    return counts


class ReferenceSetExistsError(FileExistsError):
    """The reference set's folder holds files already."""


def generate_reference_set(
    root: Path,
    spec: SynthSpec,
    per_class: int,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a consortium reference set under ``root`` (``root/<class>/*.png``, for
    ``data.reference_dir``), whole or not at all: ``per_class`` images of each class in
    ``spec``'s style, from a random stream of their own (images no member holds and the
    coordinator's test set does not), imaged by no member's instrument. A folder with
    files in it is refused unless ``overwrite`` and this function wrote it (a folder of
    anyone's own images is never replaced). Returns the images per class."""
    validate_classes(spec.classes)
    if per_class < 1:
        raise SynthSettingsError(
            f"--reference {per_class}: a reference set needs at least 1 image per class"
        )
    if root.exists() and any(root.iterdir()):
        if not (root / REFERENCE_MANIFEST).is_file():
            raise ReferenceSetExistsError(
                f"{root} holds files that `fractofl synth --reference` did not write; they are "
                "never replaced: choose an empty folder for the reference set"
            )
        if not overwrite:
            raise ReferenceSetExistsError(
                f"{root} holds a reference set already: choose an empty folder, or replace "
                "it with --overwrite"
            )
    labels = pool_labels(spec.classes, per_class)
    check_can_write(root, len(labels) * (spec.style.image_size**2 + PNG_OVERHEAD_BYTES))
    counts = dict.fromkeys(spec.classes, 0)
    with folder_written_whole(root) as staging:
        for index, label in enumerate(labels):
            name = spec.classes[int(label)]
            target = staging / name / f"{name}-{_REFERENCE_STREAM}-{index:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render_image(spec, _REFERENCE_STREAM, index, int(label))).save(target)
            counts[name] += 1
            if progress is not None:
                progress(index + 1, len(labels))
        manifest = {"spec": spec.to_dict(), "per_class": per_class, "counts": counts}
        (staging / REFERENCE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return counts
