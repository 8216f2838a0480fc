"""A short federated run on Flower's Simulation Engine and the centralized baseline,
both through the real ``fractofl`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from flwr.app import Array

from fractofl.core.model.architectures import build_model
from fractofl.core.model.checkpoint import load_checkpoint
from fractofl.core.synth.dataset import MANIFEST
from fractofl.core.wire.compression import CompressionSpec, encode_update
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow

RUN_FILES = {
    "model.pt",
    "metrics.csv",
    "confusion_matrix.png",
    "accuracy_per_round.png",
    "config.yaml",
    "summary.json",
}


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _only_run(root: Path) -> Path:
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_federated_simulation_writes_a_complete_run_folder_and_int8_updates_cost_their_payload(
    easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare: the exact bytes an int8 update of this model takes on the wire. (One run
    # for both: compressed updates change only what members send; every other simulated
    # run in the suite sends float32.)
    spec = CompressionSpec("int8")
    state = build_model("small_cnn", num_classes=4, width=16).state_dict()
    zeros = {k: np.zeros(tuple(v.shape), dtype=v.numpy().dtype) for k, v in state.items()}
    expected = sum(len(Array(np.asarray(a)).data) for a in encode_update(zeros, spec).values())
    float32 = sum(len(Array(np.asarray(a)).data) for a in zeros.values())
    manifest_before = (easy_dataset / MANIFEST).read_text()
    # Execute
    result = run_fractofl(
        "simulate",
        *easy_overrides(easy_dataset, tmp_path / "runs"),
        "updates.compression=int8",
        cwd=tmp_path,
    )
    # Assert: it ran, reused the data, and showed progress round by round.
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing synthetic data set" in result.stderr
    assert (easy_dataset / MANIFEST).read_text() == manifest_before
    assert "round   2/2 | members  2" in result.stderr
    run_dir = _only_run(tmp_path / "runs")
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    assert f"run folder: {run_dir}" in result.stdout

    rows = _rows(run_dir)
    assert [r["round"] for r in rows] == ["0", "1", "2"]
    assert [r["members_answered"] for r in rows[1:]] == ["2", "2"]
    assert all(r["config_mismatches"] == "0" for r in rows)  # members saw the run's config
    assert all(float(r["mean_train_loss"]) > 0 for r in rows[1:])
    # every member sent exactly the int8 payload, about a quarter of float32
    assert [float(r["bytes_per_member"]) for r in rows[1:]] == [expected, expected]
    assert expected < 0.3 * float32
    assert all(r["refused_updates"] == "0" for r in rows[1:])
    # where each round's time went: its exchanges, and the coordinator's scoring (round 0:
    # only that)
    assert rows[0]["train_s"] == "" and float(rows[0]["coordinator_eval_s"]) > 0
    phases = ("train_s", "aggregate_s", "member_eval_s", "coordinator_eval_s")
    assert all(float(r[p]) >= 0 for r in rows[1:] for p in phases)
    assert all(float(r["train_s"]) > float(r["aggregate_s"]) for r in rows[1:])
    # members scored round 1's model in round 2's training replies
    # (federation.evaluate_with_training): an evaluation exchange for the last round only
    assert float(rows[1]["member_eval_s"]) == 0 and float(rows[2]["member_eval_s"]) > 0
    final = float(rows[-1]["test_accuracy"])
    assert final >= 0.5, f"easy data, chance is 0.25, got {final}"
    assert float(rows[-1]["test_macro_f1"]) > 0.4

    checkpoint = load_checkpoint(run_dir / "model.pt")
    assert checkpoint.architecture == "small_cnn" and checkpoint.arch_args["width"] == 16
    assert checkpoint.classes == ["fatigue", "ductile", "cleavage", "intergranular"]
    assert checkpoint.preprocessing.image_size == 32 and checkpoint.round == 2
    assert checkpoint.run_id and checkpoint.metrics["test_accuracy"] == pytest.approx(
        final, abs=1e-5
    )
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["federation"]["rounds"] == 2 and resolved["model"]["image_size"] == 32
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sum(map(sum, summary["confusion_matrix"])) == 4 * 24


def test_centralized_baseline_on_the_same_data(easy_dataset: Path, tmp_path: Path) -> None:
    result = run_fractofl(
        "centralized", *easy_overrides(easy_dataset, tmp_path / "runs"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run(tmp_path / "runs")
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    rows = _rows(run_dir)
    assert [r["round"] for r in rows] == ["0", "1", "2"]
    assert float(rows[-1]["test_accuracy"]) >= 0.5
    assert json.loads((run_dir / "summary.json").read_text())["kind"] == "centralized"
