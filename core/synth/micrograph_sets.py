"""A federation of synthetic micrographs: each member's folder and the coordinator's test
folder, laid out as ``data=folders`` reads them (``<root>/members/member-NN/<class>/``,
``<root>/coordinator-test/<class>/``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fractofl.core.synth.dataset import holdout_dir, member_dir
from fractofl.core.synth.micrograph import MicrographInfo, MicrographSpec, write_micrograph_set

MEMBER_SEED_STRIDE = (
    1000  # member m of seed s draws from s * stride + m + 1; the test set s * stride
)


def write_micrograph_federation(
    root: Path,
    classes: Sequence[str],
    members: int,
    per_class: int,
    test_per_class: int,
    spec: MicrographSpec | None = None,
    seed: int = 0,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, list[MicrographInfo]]:
    """Write every member's micrographs and the coordinator's test set; returns what was
    written per folder name. ``progress(folder, images)`` after each folder."""
    if members < 1:
        raise ValueError(f"members={members} must be at least 1")
    written: dict[str, list[MicrographInfo]] = {}
    base = seed * MEMBER_SEED_STRIDE
    folders = [(member_dir(root, m), per_class, base + m + 1) for m in range(members)]
    folders.append((holdout_dir(root), test_per_class, base))
    for folder, count, folder_seed in folders:
        folder.parent.mkdir(parents=True, exist_ok=True)
        written[folder.name] = write_micrograph_set(folder, classes, count, spec, folder_seed)
        if progress is not None:
            progress(folder.name, len(written[folder.name]))
    return written
