"""``fractofl report`` on a real finished run: plots, Markdown, and verified versions only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image

from fractofl.client.member import evaluate_locally, member_cache_dir, member_data_dir
from fractofl.client.node_config import PARTITION_KEY
from fractofl.core.config.run_config import from_nested
from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.learning.member_data import load_member_data
from fractofl.core.learning.metrics import precision_recall_f1
from fractofl.core.model.checkpoint import load_checkpoint
from fractofl.core.trust.registry import ModelRegistry
from fractofl.server.member_evaluation import read_member_evaluations
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(easy_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("report")
    result = run_fractofl(
        "simulate", *easy_overrides(easy_dataset, workdir / "runs"), "output.name=run", cwd=workdir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_report_renders_curves_and_the_last_version_class_by_class(finished_run: Path) -> None:
    # Execute
    result = run_fractofl("report", "runs/run", cwd=finished_run)
    # Assert: PNGs that are real images, and a summary naming the verified version.
    assert result.returncode == 0, result.stderr[-3000:]
    out = finished_run / "runs" / "run" / "report"
    last = ModelRegistry(finished_run / "registry").versions()[-1]
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {
        "metrics_per_round.png",
        "member_accuracy.png",
        f"confusion_{last.name}.png",
        f"per_class_{last.name}.png",
    }
    for name in pngs:
        with Image.open(out / name) as image:
            assert image.size[0] > 300
    text = (out / "report.md").read_text()
    assert f"## Model {last.name}" in text and "signature verified" in text
    for name in DEFAULT_CLASSES:
        assert f"| {name} | " in text
    assert "| 2 | 2 | 0 | 0 | 0 |" in text  # round 2: two members answered, none failed
    # each member at the last round, on its own split, recall (images) per class
    assert "## Per member" in text
    members = read_member_evaluations(finished_run / "runs" / "run" / "member_eval.csv")
    for row in (r for r in members if r["round"] == "2"):
        cells = [f"{float(row[f'recall_{c}']):.3f} ({row[f'images_{c}']})" for c in DEFAULT_CLASSES]
        line = f"| {row['member']} | 2 | {row['val_examples']} | {float(row['val_accuracy']):.3f} |"
        assert line in text and all(cell in text for cell in cells)


def test_every_member_scores_every_round_on_its_own_split_as_it_would_in_process(
    finished_run: Path,
) -> None:
    # Prepare: the final global model, and each simulated member's own validation split
    run_dir = finished_run / "runs" / "run"
    cfg = from_nested(yaml.safe_load((run_dir / "config.yaml").read_text()))
    model = load_checkpoint(run_dir / "model.pt").build_model()
    # Execute
    rows = read_member_evaluations(run_dir / "member_eval.csv")
    # Assert: a row per member and round, named by partition
    members = [f"partition-{p}" for p in range(cfg.federation.members)]
    assert sorted((int(r["round"]), r["member"]) for r in rows) == [
        (server_round, member) for server_round in (1, 2) for member in members
    ]
    # ... and the last round's equal the member's own evaluation of the final model
    for partition, member in enumerate(members):
        (row,) = [r for r in rows if r["round"] == "2" and r["member"] == member]
        node = {PARTITION_KEY: partition}
        data = load_member_data(member_data_dir(node, cfg), cfg, member_cache_dir(node, cfg))
        result = evaluate_locally(model, data, cfg)
        assert result is not None
        _, recall, _ = precision_recall_f1(result.confusion)
        counts = result.confusion.sum(axis=1)
        assert int(row["val_examples"]) == result.examples == len(data.val)
        assert float(row["val_accuracy"]) == pytest.approx(result.accuracy, abs=1e-6)
        assert float(row["val_macro_f1"]) == pytest.approx(result.macro_f1, abs=1e-6)
        assert float(row["val_loss"]) == pytest.approx(result.loss, rel=1e-4)
        for index, name in enumerate(DEFAULT_CLASSES):
            assert int(row[f"images_{name}"]) == counts[index]
            if counts[index]:
                assert float(row[f"recall_{name}"]) == pytest.approx(recall[index], abs=1e-6)
            else:
                assert row[f"recall_{name}"] == ""  # no images of it: no recall, not 0


def test_each_version_carries_its_worst_members_accuracy_and_best_can_be_chosen_by_it(
    finished_run: Path,
) -> None:
    # Prepare: the worst member's accuracy of each round, from the members' own rows
    rows = read_member_evaluations(finished_run / "runs" / "run" / "member_eval.csv")
    worst = {
        r: min(float(row["val_accuracy"]) for row in rows if row["round"] == str(r)) for r in (1, 2)
    }
    registry = ModelRegistry(finished_run / "registry")
    expected = max(registry.versions(), key=lambda m: (worst[m.round], m.version)).name
    by_worst = "registry.retention.best_metric=member_min_val_accuracy"
    # Execute (before the next test damages version 1's weights)
    exported = run_fractofl("models", "export", "best", "best-out", by_worst, cwd=finished_run)
    listed = run_fractofl("models", "list", by_worst, cwd=finished_run)
    # Assert: signed in every version, and `best` is the version that metric says
    for meta in registry.versions():
        assert meta.metrics["member_min_val_accuracy"] == pytest.approx(worst[meta.round], abs=1e-5)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert f"exported {expected} to" in exported.stdout
    marked = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.endswith(" best")]
    assert marked == [expected]


def test_report_of_an_earlier_version_and_refusal_of_a_tampered_one(finished_run: Path) -> None:
    # Prepare: round 1's version, and a copy of the registry with its weights changed.
    first = ModelRegistry(finished_run / "registry").versions()[0]
    ok = run_fractofl(
        "report", "runs/run", "--version", str(first.version), "--out", "r1", cwd=finished_run
    )
    weights = finished_run / "registry" / first.name / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    # Execute
    refused = run_fractofl(
        "report", "runs/run", "--version", str(first.version), "--out", "r2", cwd=finished_run
    )
    # Assert
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert f"## Model {first.name}" in (finished_run / "r1" / "report.md").read_text()
    assert refused.returncode == 1
    assert "weights changed after signing" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (finished_run / "r2").exists()
