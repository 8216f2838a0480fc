"""A user's own member folders (``data=folders``): classes the generator does not know,
read by ``simulate`` and ``centralized`` and never written; ``synth`` refuses such
classes before it writes anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import run_fractofl

CLASSES = ("ring", "bar", "cross")
# Two members that hold different classes (non-IID, as real members do), and a test set.
LAYOUT = {"lab-a": {"ring": 14, "bar": 14}, "lab-b": {"bar": 6, "cross": 14, "ring": 4}}
TEST_PER_CLASS = 6
FAST_RUN = [
    f"data.classes=[{','.join(CLASSES)}]",
    "model.image_size=32",
    "model.args.width=8",
    "federation.rounds=1",
    "train.local_epochs=1",
    "train.augment=none",
]


def _shape(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy micrograph-like image of a shape whose orientation matters."""
    image = Image.new("L", (size, size), int(rng.integers(40, 90)))
    draw = ImageDraw.Draw(image)
    c, r = size // 2 + int(rng.integers(-3, 4)), size // 3
    if name == "ring":
        draw.ellipse((c - r, c - r, c + r, c + r), outline=220, width=3)
    elif name == "bar":
        draw.rectangle((c - 2, c - r, c + 2, c + r), fill=220)
    else:
        draw.line((c - r, c - r, c + r, c + r), fill=220, width=3)
        draw.line((c - r, c + r, c + r, c - r), fill=220, width=3)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 12, (size, size))
    return pixels.clip(0, 255)


def _write(folder: Path, name: str, index: int, rng: np.random.Generator) -> None:
    """Every third image a 16-bit TIFF of another size, as a second microscope writes."""
    folder.mkdir(parents=True, exist_ok=True)
    if index % 3 == 2:
        pixels = (_shape(name, 56, rng) * 257).astype(np.uint16)
        Image.fromarray(pixels).save(folder / f"{name}-{index:03d}.tif")
    else:
        Image.fromarray(_shape(name, 40, rng).astype(np.uint8)).save(folder / f"{name}-{index}.png")


@pytest.fixture(scope="module")
def own_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/lab-a``, ``root/lab-b`` (the members) and ``root/test``, read only."""
    root = tmp_path_factory.mktemp("own") / "images"
    rng = np.random.default_rng(0)
    for member, counts in LAYOUT.items():
        for name, count in counts.items():
            for index in range(count):
                _write(root / member / name, name, index, rng)
    for name in CLASSES:
        for index in range(TEST_PER_CLASS):
            _write(root / "test" / name, name, index, rng)
    return root


def _fingerprint(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: a file by its bytes' hash."""
    return {
        p.relative_to(root).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.slow
@pytest.mark.parametrize("command", ["simulate", "centralized"])
def test_runs_on_own_folders_and_leaves_them_byte_identical(
    own_images: Path, tmp_path: Path, command: str
) -> None:
    # Prepare
    before = _fingerprint(own_images)
    # Execute
    result = run_fractofl(
        command,
        "data=folders",
        f"data.root={own_images}",
        f"data.test_dir={own_images / 'test'}",
        f"output.root={tmp_path / 'runs'}",
        "output.name=own",
        f"registry.root={tmp_path / 'registry'}",
        f"registry.private_key={tmp_path / 'keys' / 'c.key'}",
        f"registry.public_key={tmp_path / 'keys' / 'c.pub'}",
        *FAST_RUN,
        cwd=tmp_path,
    )
    # Assert: a finished run on the two members and the test set, the folders untouched
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 member folders (read only)" in result.stderr
    summary = json.loads((tmp_path / "runs" / "own" / "summary.json").read_text())
    assert summary["rounds"] == 1 and 0.0 <= summary["final"]["test_accuracy"] <= 1.0
    assert summary["classes"] == list(CLASSES) and len(summary["confusion_matrix"]) == 3
    assert sum(map(sum, summary["confusion_matrix"])) == len(CLASSES) * TEST_PER_CLASS
    assert _fingerprint(own_images) == before
    assert not (own_images / "manifest.json").exists()


def test_members_follow_the_folders_and_a_contrary_count_is_refused(
    own_images: Path, tmp_path: Path
) -> None:
    # Execute: an explicit member list, printed config; then a count that disagrees
    listed = run_fractofl(
        "simulate",
        "--cfg",
        "data=folders",
        f"data.member_dirs=[{own_images / 'lab-b'}]",
        f"data.test_dir={own_images / 'test'}",
        *FAST_RUN,
        cwd=tmp_path,
    )
    contrary = run_fractofl(
        "simulate",
        "data=folders",
        f"data.root={own_images}",
        f"data.test_dir={own_images / 'test'}",
        "federation.members=3",
        *FAST_RUN,
        cwd=tmp_path,
    )
    missing_test = run_fractofl(
        "centralized", "data=folders", f"data.root={own_images}", *FAST_RUN, cwd=tmp_path
    )
    # Assert
    assert listed.returncode == 0 and "source: folders" in listed.stdout
    assert contrary.returncode == 1
    assert "federation.members=3, but data=folders found 2 member folders" in contrary.stderr
    assert missing_test.returncode == 2 and "needs data.test_dir" in missing_test.stderr
    assert "Traceback" not in contrary.stderr + missing_test.stderr
    assert not (tmp_path / "runs").exists()


def test_a_folder_that_is_not_a_member_is_named(own_images: Path, tmp_path: Path) -> None:
    # Prepare: a root with the members and a stray folder of notes
    root = tmp_path / "root"
    (root / "notes").mkdir(parents=True)
    for member in LAYOUT:
        (root / member).symlink_to(own_images / member, target_is_directory=True)
    # Execute
    result = run_fractofl(
        "centralized",
        "data=folders",
        f"data.root={root}",
        f"data.test_dir={own_images / 'test'}",
        *FAST_RUN,
        cwd=tmp_path,
    )
    # Assert
    assert result.returncode == 1
    assert "notes: a member folder needs one sub-folder per class" in result.stderr
    assert "list the members in data.member_dirs" in result.stderr


def test_synth_refuses_classes_it_cannot_draw_before_writing(tmp_path: Path) -> None:
    # Execute: the output folder first, options after the overrides
    result = run_fractofl(
        "synth", str(tmp_path / "out"), "data.classes=[zero,one]", "--per-class", "2", cwd=tmp_path
    )
    # Assert
    assert result.returncode == 1
    assert "draws only fatigue, ductile, cleavage, intergranular" in result.stderr
    assert "data=folders" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
