"""``fractofl report`` on a real finished run: plots, Markdown, and verified versions only;
and a member's own report on the same run: local-only, global and personalized models."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from fractofl.client.member import evaluate_locally, member_cache_dir, member_data_dir
from fractofl.client.node_config import PARTITION_KEY
from fractofl.core.config.run_config import from_nested
from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.learning.member_data import load_member_data
from fractofl.core.learning.metrics import precision_recall_f1
from fractofl.core.synth.dataset import member_dir
from fractofl.core.trust.registry import ModelRegistry, ModelVerificationError
from fractofl.core.trust.signing import load_public_key
from fractofl.server.cross_site import CROSS_SITE_FILE, read_cross_site
from fractofl.server.member_evaluation import read_member_evaluations
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(easy_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("report")
    result = run_fractofl(
        "simulate",
        *easy_overrides(easy_dataset, workdir / "runs"),
        "output.name=run",
        "federation.cross_site=true",
        "train.loss=balanced_softmax",
        cwd=workdir,
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
    assert "members whose updates are in it: partition-0, partition-1" in text
    # calibrated at publication: the temperature is signed, and serving applies it
    assert 0.05 <= last.metrics["temperature"] <= 20 and "ece_calibrated" in last.metrics
    assert "- calibration on the coordinator test set: expected calibration error" in text
    assert f"served at its signed temperature {last.metrics['temperature']:.3f}" in text
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
    # Prepare: each round's signed version, and each simulated member's own validation split
    # (round 1's scores came with round 2's training replies, federation.evaluate_with_training;
    # round 2's, the last, from an evaluation exchange)
    run_dir = finished_run / "runs" / "run"
    cfg = from_nested(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert cfg.federation.evaluate_with_training
    registry = ModelRegistry(finished_run / "registry")
    key = load_public_key(finished_run / "keys" / "coordinator.pub")
    versions = {meta.round: meta for meta in registry.versions()}
    models = {r: registry.load_verified(versions[r].name, key)[0].build_model() for r in (1, 2)}
    # Execute
    rows = read_member_evaluations(run_dir / "member_eval.csv")
    # Assert: a row per member and round, named by partition
    members = [f"partition-{p}" for p in range(cfg.federation.members)]
    assert sorted((int(r["round"]), r["member"]) for r in rows) == [
        (server_round, member) for server_round in (1, 2) for member in members
    ]
    # ... each version signed with its worst member's accuracy
    for server_round in (1, 2):
        worst = min(float(r["val_accuracy"]) for r in rows if r["round"] == str(server_round))
        signed = versions[server_round].metrics["member_min_val_accuracy"]
        assert signed == pytest.approx(worst, abs=1e-6)
    # ... and each round's rows equal the member's own evaluation of that round's version
    for (server_round, model), (partition, member) in itertools.product(
        models.items(), enumerate(members)
    ):
        (row,) = [r for r in rows if r["round"] == str(server_round) and r["member"] == member]
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


def test_each_version_names_the_members_whose_updates_are_in_it(finished_run: Path) -> None:
    # Prepare: the accepted updates of each round, and each node's partition
    run_dir = finished_run / "runs" / "run"
    partition_of = {
        row["node_id"]: row["member"]
        for row in read_member_evaluations(run_dir / "member_eval.csv")
    }
    with open(run_dir / "updates.csv", newline="") as handle:
        accepted = [row for row in csv.DictReader(handle) if row["accepted"] == "1"]
    # Execute
    versions = {meta.round: meta for meta in ModelRegistry(finished_run / "registry").versions()}
    # Assert: signed with each version, the members of its round and of those before it
    for server_round in (1, 2):
        expected = sorted(
            {partition_of[row["node_id"]] for row in accepted if int(row["round"]) <= server_round}
        )
        assert expected, "precondition: some update was accepted"
        assert versions[server_round].contributors == tuple(expected)


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


def test_cross_site_matrix_scores_every_model_on_every_members_split(finished_run: Path) -> None:
    # Prepare
    run_dir = finished_run / "runs" / "run"
    members = ["partition-0", "partition-1"]
    # Execute
    rows = read_cross_site(run_dir / CROSS_SITE_FILE)
    reported = run_fractofl("report", "runs/run", "--out", "cross", cwd=finished_run)
    # Assert: the global model and each member's personalized one, scored by each member
    cells = {(r["model"], r["member"]): r for r in rows}
    models = ["global", *(f"personalized:{m}" for m in members)]
    assert sorted(cells) == sorted((model, m) for model in models for m in members)
    for member in members:
        # the global row is what each member sent of the final model in the last round
        final = _member_eval_of(run_dir, member, 2)
        assert cells["global", member]["val_accuracy"] == final["val_accuracy"]
        assert cells["global", member]["val_examples"] == final["val_examples"]
        # the diagonal: a member's model scored where it was made equals its own score
        own = cells[f"personalized:{member}", member]
        assert own["own_accuracy"] and own["val_accuracy"] == own["own_accuracy"]
    assert all(not r["note"] for r in rows)
    assert reported.returncode == 0, reported.stderr[-3000:]
    report = (finished_run / "cross" / "report.md").read_text()
    assert "## Cross-site evaluation" in report
    assert f"| model | {' | '.join(members)} |" in report


def _member_eval_of(run_dir: Path, member: str, server_round: int) -> dict[str, str]:
    rows = read_member_evaluations(run_dir / "member_eval.csv")
    (row,) = [r for r in rows if r["member"] == member and r["round"] == str(server_round)]
    return row


def test_a_member_compares_its_local_only_global_and_personalized_models_on_its_own_split(
    finished_run: Path, easy_dataset: Path
) -> None:
    # Prepare: member 0's own settings (the run's model) and its images
    run_dir = finished_run / "runs" / "run"
    cfg = from_nested(yaml.safe_load((run_dir / "config.yaml").read_text()))
    latest = ModelRegistry(finished_run / "registry").versions()[-1]
    own = [
        *easy_overrides(easy_dataset, finished_run / "runs"),
        "deployment.member_dir=member-0",
    ]
    data_dir = str(member_dir(easy_dataset, 0))
    # Execute
    baseline = run_fractofl(
        "member", "baseline", "latest", "--data", data_dir, *own, cwd=finished_run
    )
    personal = run_fractofl(
        "member", "personalize", "latest", "--data", data_dir, *own, cwd=finished_run
    )
    report = run_fractofl("member", "report", "latest", "--data", data_dir, *own, cwd=finished_run)
    # Assert: both kept in the member's own registry, signed with its own key only
    for result in (baseline, personal, report):
        assert result.returncode == 0, result.stderr[-3000:]
    assert "round 2/2: train loss" in baseline.stdout  # the global version's budget
    # the run trained with balanced softmax, which its version records: the personalized
    # model takes on this member's class mix, and its classifier is fine-tuned
    assert latest.metrics["balanced_softmax_floor"] == pytest.approx(0.01)
    assert "class mix: this member's (" in personal.stdout
    assert "fine-tuning classifier layer(s): 2 epoch(s)" in personal.stdout
    # the version says how members split their images, so the member splits them alike
    assert latest.metrics["split_seed"] == cfg.seed
    assert latest.metrics["val_fraction"] == pytest.approx(cfg.data.val_fraction)
    private = ModelRegistry(finished_run / "member-0" / "models")
    own_key = load_public_key(finished_run / "member-0" / "models.pub")
    assert (finished_run / "member-0" / "models.key").stat().st_mode & 0o077 == 0
    kept = private.versions()
    assert [m.run_id for m in kept] == [f"baseline-{latest.run_id}", f"personal-{latest.run_id}"]
    with pytest.raises(ModelVerificationError):
        private.verify(kept[0].name, load_public_key(finished_run / "keys" / "coordinator.pub"))
    served = f"fractofl serve local {kept[1].name} registry.root=member-0/models"
    assert served in personal.stdout
    # ... each kept model's signed score is what it scores in-process on the member's split
    data = load_member_data(Path(data_dir), cfg, finished_run / "member-0" / "cache")
    scores = {}
    for meta in kept:
        checkpoint, _ = private.load_verified(meta.name, own_key)
        result = evaluate_locally(checkpoint.build_model(), data, cfg)
        assert result is not None
        assert meta.metrics["val_accuracy"] == pytest.approx(result.accuracy, abs=1e-6)
        assert meta.metrics["val_examples"] == result.examples == len(data.val)
        scores[meta.run_id.split("-")[0]] = result
    # ... and the report shows them beside the global model, whose score on this split is
    # the one member 0 sent in the federation's last round
    global_row = _member_eval_of(run_dir, "partition-0", latest.round)
    text = (finished_run / "member-0" / "report.md").read_text()
    assert text in report.stdout
    for role, version, accuracy in (
        ("local-only", f"own {kept[0].name}", scores["baseline"].accuracy),
        ("global", latest.name, float(global_row["val_accuracy"])),
        ("personalized", f"own {kept[1].name}", scores["personal"].accuracy),
    ):
        assert f"| {role} | {version} | {len(data.val)} | {accuracy:.3f} |" in text
    global_model, _ = ModelRegistry(finished_run / "registry").load_verified(
        latest.name, load_public_key(finished_run / "keys" / "coordinator.pub")
    )
    # ... the personalized model is the global one with a fine-tuned classifier layer
    personal_state = private.load_verified(kept[1].name, own_key)[0].state_dict
    moved = {k for k, v in global_model.state_dict.items() if not torch.equal(v, personal_state[k])}
    assert moved == {"head.3.weight", "head.3.bias"}
    global_result = evaluate_locally(global_model.build_model(), data, cfg)
    assert global_result is not None
    gain = global_result.accuracy - scores["baseline"].accuracy
    assert f"gain of the global model over local-only: accuracy {gain:+.3f}" in text


def test_a_baseline_of_another_model_is_refused_naming_the_setting_and_its_fix(
    finished_run: Path, easy_dataset: Path
) -> None:
    # Prepare: this member's config leaves the run's image size at the model's default
    # and splits its images with another seed
    own = [
        *easy_overrides(easy_dataset, finished_run / "runs"),
        "deployment.member_dir=member-1",
        "seed=7",
        "model.image_size=64",
    ]
    data_dir = str(member_dir(easy_dataset, 1))
    # Execute
    refused = run_fractofl(
        "member", "baseline", "latest", "--data", data_dir, *own, cwd=finished_run
    )
    unmade = run_fractofl(
        "member", "report", "latest", "--data", data_dir, *own[:-2], cwd=finished_run
    )
    # Assert: one line per differing setting with its fix, nothing written
    assert refused.returncode == 1
    assert "model.image_size: the run's 32, this one's 64 (model.image_size=32)" in refused.stderr
    assert "seed: the run's 42, this one's 7 (seed=42)" in refused.stderr  # other val images
    assert "Traceback" not in refused.stderr
    assert not (finished_run / "member-1" / "models").exists()
    # ... and a report before any baseline says how to make one
    assert unmade.returncode == 0, unmade.stderr[-3000:]
    assert "local-only: none for run" in unmade.stdout
    assert "`fractofl member baseline latest` makes it" in unmade.stdout


def test_in_simulation_every_members_gain_from_joining_is_measured(
    finished_run: Path, easy_dataset: Path
) -> None:
    # Prepare
    run_dir = finished_run / "runs" / "run"
    latest = ModelRegistry(finished_run / "registry").versions()[-1]
    # Execute
    gains = run_fractofl(
        "member",
        "gains",
        "latest",
        "--json",
        "gains.json",
        *easy_overrides(easy_dataset, finished_run / "runs"),
        cwd=finished_run,
    )
    # Assert: a row per member; its global score is the one it sent in the last round
    assert gains.returncode == 0, gains.stderr[-3000:]
    for partition in (0, 1):
        row = _member_eval_of(run_dir, f"partition-{partition}", latest.round)
        line = next(
            x for x in gains.stdout.splitlines() if x.startswith(f"| partition-{partition} |")
        )
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == row["val_examples"]
        assert cells[3] == f"{float(row['val_accuracy']):.3f}"
        assert float(cells[5]) == pytest.approx(float(cells[3]) - float(cells[2]), abs=0.0015)
    written = json.loads((finished_run / "gains.json").read_text())
    assert [g["member"] for g in written] == ["partition-0", "partition-1"]
    row = _member_eval_of(run_dir, "partition-1", latest.round)
    assert written[1]["global_accuracy"] == pytest.approx(float(row["val_accuracy"]), abs=1e-6)
