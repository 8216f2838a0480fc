"""A consortium reference set on Flower's Simulation Engine, through the real ``fractofl``
command: every member trains with it and none validates on it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fractofl.core.config.run_config import RunConfig
from fractofl.core.images.labelled import folder_identity
from fractofl.core.learning.member_data import load_member_data
from fractofl.core.synth.dataset import generate_reference_set, member_dir
from tests.conftest import easy_overrides, easy_spec, run_fractofl

pytestmark = pytest.mark.slow


def test_members_train_with_the_reference_set_and_score_on_their_own_images(
    easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare: a reference set in the easy set's style
    reference = tmp_path / "reference"
    generate_reference_set(reference, easy_spec(), 5)
    # Execute: one round
    result = run_fractofl(
        "simulate",
        *easy_overrides(easy_dataset, tmp_path / "runs"),
        "federation.rounds=1",
        "train.local_epochs=1",
        f"data.reference_dir={reference}",
        cwd=tmp_path,
    )
    # Assert: both members answered, trained with the set (the coordinator says which
    # copy) and scored the model on their own validation images only
    assert result.returncode == 0, result.stderr[-3000:]
    identity = folder_identity(reference, RunConfig().data.classes)
    assert f"members trained with the reference set copy {identity:08x}" in result.stderr
    assert "different reference sets" not in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    with open(run_dir / "members.csv", newline="") as handle:
        statuses = [row["status"] for row in csv.DictReader(handle)]
    assert statuses == ["answered", "answered"]
    with open(run_dir / "member_eval.csv", newline="") as handle:
        scored = {row["member"]: int(row["val_examples"]) for row in csv.DictReader(handle)}
    cfg = RunConfig()
    cfg.model.image_size = 32
    own = {
        f"partition-{m}": len(
            load_member_data(member_dir(easy_dataset, m), cfg, easy_dataset / "cache").val
        )
        for m in range(easy_spec().members)
    }
    assert scored == own
