"""The ``fractofl`` command as a user types it: exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from fractofl.core.images.sem_scale import read_sem_scale
from tests.conftest import run_fractofl


def test_cfg_prints_the_resolved_config_with_overrides(tmp_path: Path) -> None:
    result = run_fractofl(
        "simulate", "--cfg", "federation.rounds=20", "data.alpha=0.1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["federation"]["rounds"] == 20 and printed["data"]["alpha"] == 0.1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_unknown_key_exits_2_naming_valid_keys(tmp_path: Path) -> None:
    result = run_fractofl("simulate", "federation.roundz=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'rounds'" in result.stderr
    assert "Traceback" not in result.stderr


def test_synth_writes_members_and_test_set(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    result = run_fractofl(
        "synth",
        str(out),
        "--members",
        "3",
        "--alpha",
        "0.5",
        "--per-class",
        "12",
        "--test-per-class",
        "2",
        "--seed",
        "4",
        "+data.synth.style.image_size=32",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["counts"]) == [
        "coordinator-test",
        "members/member-00",
        "members/member-01",
        "members/member-02",
    ]
    assert manifest["spec"]["alpha"] == 0.5 and manifest["spec"]["seed"] == 4
    assert len(list(out.rglob("*.png"))) == 4 * 12 + 4 * 2


def test_data_check_reports_and_sets_the_exit_code(tmp_path: Path) -> None:
    # Prepare: one usable image, a text file posing as PNG, an unknown class folder.
    good = tmp_path / "member" / "fatigue"
    good.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(good / "a.png")
    (good / "fake.png").write_text("hello")
    (tmp_path / "member" / "Fatigue_old").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    # Execute
    ok = run_fractofl("data", "check", str(tmp_path / "member"), cwd=tmp_path)
    as_json = run_fractofl("data", "check", str(tmp_path / "member"), "--json", cwd=tmp_path)
    fatal = run_fractofl("data", "check", str(empty), cwd=tmp_path)
    # Assert
    assert ok.returncode == 0, ok.stderr
    assert "fake.png" in ok.stdout and "Fatigue_old" in ok.stdout
    assert json.loads(as_json.stdout)["class_counts"]["fatigue"] == 1
    assert fatal.returncode == 1 and "FATAL" in fatal.stdout


def test_impossible_split_and_foreign_folder_fail_without_traceback(tmp_path: Path) -> None:
    too_small = run_fractofl(
        "synth", str(tmp_path / "a"), "--members", "50", "--per-class", "4", cwd=tmp_path
    )
    foreign = tmp_path / "real-images"
    (foreign / "fatigue").mkdir(parents=True)
    (foreign / "fatigue" / "part-17.png").write_bytes(b"confidential")
    overwrite = run_fractofl("synth", str(foreign), "--per-class", "4", cwd=tmp_path)
    assert too_small.returncode == 1 and "data.min_per_member" in too_small.stderr
    assert overwrite.returncode == 1 and "not written by `fractofl synth`" in overwrite.stderr
    assert "Traceback" not in too_small.stderr + overwrite.stderr
    assert (foreign / "fatigue" / "part-17.png").read_bytes() == b"confidential"


def test_a_run_folder_that_holds_a_run_is_refused_before_anything_starts(tmp_path: Path) -> None:
    # Prepare: output.name names the folder of an earlier run.
    used = tmp_path / "runs" / "mine"
    used.mkdir(parents=True)
    (used / "metrics.csv").write_text("round\n0\n")
    # Execute: a simulation and a centralized run into it, on a data set not made yet.
    where = [f"data.root={tmp_path / 'data'}", f"output.root={tmp_path / 'runs'}"]
    runs = [
        run_fractofl(kind, *where, "output.name=mine", cwd=tmp_path)
        for kind in ("simulate", "centralized")
    ]
    # Assert: refused before the data set is made or Ray starts; the folder is as it was.
    for result in runs:
        assert result.returncode == 1
        assert f"run folder {used} already holds a run; choose another output.name" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr and "ray" not in result.stderr.lower()
    assert not (tmp_path / "data").exists()
    assert [p.name for p in used.iterdir()] == ["metrics.csv"]
    assert (used / "metrics.csv").read_text() == "round\n0\n"


def test_synth_micrographs_writes_member_folders_that_train_at_a_physical_scale(
    tmp_path: Path,
) -> None:
    out = tmp_path / "micrographs"
    result = run_fractofl(
        "synth", str(out), "--micrographs", "--members", "2", "--per-class", "1",
        "--test-per-class", "1", "--size", "256x192", "--seed", "3", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for folder in ("members/member-00", "members/member-01", "coordinator-test"):
        tiffs = sorted((out / folder).rglob("*.tif"))
        assert len(tiffs) == 4, folder  # one per class
        assert read_sem_scale(tiffs[0]).pixel_size_um is not None
    assert f"data.root={out}/members data.test_dir={out}/coordinator-test" in result.stdout
    assert "model.pixel_size_um=" in result.stdout
    bad = run_fractofl("synth", str(tmp_path / "x"), "--micrographs", "--size", "big", cwd=tmp_path)
    assert bad.returncode != 0 and "--size 'big' is not WIDTHxHEIGHT" in bad.stderr
    assert not (tmp_path / "x").exists()
