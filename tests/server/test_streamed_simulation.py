"""Streaming aggregation on Flower's Simulation Engine, through the real ``fractofl``
command: the same run streamed and gathered ends with the same model, bit for bit, and
the same screening of a scaled (attacking) member's update."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.conftest import FIVE_MEMBERS_PER_CLASS, easy_overrides, run_fractofl

pytestmark = pytest.mark.slow


def _updates(run_dir: Path) -> list[tuple[str, ...]]:
    """Each round's verdicts in ``updates.csv``, without node ids (they differ per run)."""
    with open(run_dir / "updates.csv", newline="") as handle:
        rows = [
            tuple(value for key, value in row.items() if key not in {"node_id", "member"})
            for row in csv.DictReader(handle)
        ]
    return sorted(rows)


def test_a_streamed_run_equals_the_gathered_run_to_the_bit(
    easy_dataset_5: Path, tmp_path: Path
) -> None:
    # Prepare: 5 members, one of which sends its update flipped and scaled 10x, so the
    # norm test (the round's median) must refuse it in both runs.
    runs, spill = tmp_path / "runs", tmp_path / "spill-here"
    common = [
        *easy_overrides(easy_dataset_5, runs, members=5, per_class=FIVE_MEMBERS_PER_CLASS),
        "federation.attackers=1",
        "federation.attack=sign_flip",
        "train.local_epochs=1",
        "federation.rounds=1",  # tests/strategies/test_streaming.py runs two rounds
    ]

    # Execute
    gathered = run_fractofl(
        "simulate", *common, "updates.aggregation=gathered", "output.name=gathered", cwd=tmp_path
    )
    streamed = run_fractofl(
        "simulate",
        *common,
        "updates.aggregation=streamed",
        f"updates.spill_dir={spill}",
        "output.name=streamed",
        cwd=tmp_path,
    )

    # Assert: both ran; only the streamed one used the spill, which is gone afterwards.
    assert gathered.returncode == 0, gathered.stderr[-3000:]
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    assert f"streaming aggregation, updates kept in {spill}" in streamed.stderr
    assert "the round's updates are gathered in memory" in gathered.stderr
    assert not spill.exists()
    # the same verdicts (the attacker refused in each round) and the same final model
    verdicts = _updates(runs / "streamed")
    assert verdicts == _updates(runs / "gathered")
    assert sum("above 5 x the median" in "".join(row) for row in verdicts) == 1
    final = torch.load(runs / "streamed" / "model.pt", weights_only=True)["state_dict"]
    expected = torch.load(runs / "gathered" / "model.pt", weights_only=True)["state_dict"]
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[key], expected[key]) for key in final)


def test_streaming_a_robust_strategy_is_refused_before_the_run(
    easy_dataset: Path, tmp_path: Path
) -> None:
    result = run_fractofl(
        "simulate",
        *easy_overrides(easy_dataset, tmp_path / "runs"),
        "strategy=krum",
        "updates.aggregation=streamed",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "updates.aggregation=streamed is exact only for fedavg" in result.stderr
    assert "strategy='krum' compares all of a round's updates at once" in result.stderr
    assert not (tmp_path / "runs").exists()
