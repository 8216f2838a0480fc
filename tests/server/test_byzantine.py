"""Byzantine members among five, on Flower's Simulation Engine: the update guard refuses
a sign-flipping and a NaN-sending member in every round, streamed and gathered aggregation
screen and average alike, and robust aggregation survives what the guard lets through.

Every run is a real ``fractofl simulate`` (Ray starts, members train), so the runs are
shared between the tests that can read the same one; the accuracy they must keep is a floor
measured on a clean run of the same config, not a fourth simulation in every suite run."""

from __future__ import annotations

import csv
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import FIVE_MEMBERS_PER_CLASS, easy_overrides, run_fractofl

pytestmark = pytest.mark.slow

NO_NORM_TEST = "updates.max_norm_multiple=1e9"
SIGN_FLIP = ("federation.attackers=1", "federation.attack=sign_flip")
# Partition 0 flips its update and scales it 10x, partition 1 sends NaN: two kinds of
# attacker in one run, each refused by its own check.
SIGN_FLIP_AND_NAN = ("federation.attackers=2", "federation.attack='sign_flip,nan'")
ROUNDS = 5


@dataclass(frozen=True)
class Run:
    """A finished simulation: its run folder and what it printed."""

    folder: Path
    result: subprocess.CompletedProcess[str]

    def metrics(self) -> list[dict[str, str]]:
        with open(self.folder / "metrics.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    def updates(self) -> list[dict[str, str]]:
        with open(self.folder / "updates.csv", newline="") as handle:
            return list(csv.DictReader(handle))


def _run(data: Path, runs: Path, name: str, *overrides: str) -> Run:
    result = run_fractofl(
        "simulate",
        *easy_overrides(data, runs, members=5, per_class=FIVE_MEMBERS_PER_CLASS),
        "federation.min_train_members=4",
        f"federation.rounds={ROUNDS}",
        f"output.name={name}",
        *overrides,
        cwd=data.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Run(runs / name, result)


def _late(rows: list[dict[str, str]]) -> float:
    """Mean test accuracy of the last two rounds (damps round-to-round noise on this set)."""
    return sum(float(r["test_accuracy"]) for r in rows[-2:]) / 2


# What an attacked run must still reach: a clean FedAvg run of this config ends at about 0.67
# (mean of the last two rounds, 2026-12); refusing or out-voting the attackers also loses
# their (non-IID) data, hence the slack. Four classes: chance is 0.25.
LATE_ACCURACY_FLOOR = 0.5


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("byzantine") / "runs"


@pytest.fixture(scope="module")
def attacked_streamed(easy_dataset_5: Path, runs: Path) -> Run:
    """Partition 0 sends its update flipped and scaled 10x every round, partition 1 sends
    NaN in its first tensor; the replies are streamed through a spill folder of the test's
    choosing."""
    spill = runs.parent / "spill-here"
    run = _run(
        easy_dataset_5,
        runs,
        "attacked-streamed",
        *SIGN_FLIP_AND_NAN,
        "updates.aggregation=streamed",
        f"updates.spill_dir={spill}",
    )
    assert f"streaming aggregation, updates kept in {spill}" in run.result.stderr
    assert not spill.exists()  # the spill is gone after the run
    # federation.local_cpus=1: the members' lines come from one Ray worker process
    assert len(set(re.findall(r"ClientAppActor pid=(\d+)", run.result.stderr))) == 1
    return run


def _check_of(reason: str) -> str:
    """Which of the guard's checks an ``updates.csv`` reason names."""
    if "above 5 x the median" in reason:
        return "norm"
    return "NaN" if "NaN" in reason else reason


def test_guard_refuses_a_sign_flipping_and_a_nan_attacker_every_round(
    attacked_streamed: Run,
) -> None:
    # Execute (the fixture): in every round one member sends -10 x its update, another NaN.
    rows = attacked_streamed.metrics()
    refused = [u for u in attacked_streamed.updates() if u["accepted"] == "0"]
    # Assert: two refusals a round, the others' three updates averaged (so no honest
    # member's update was ever taken for an outlier, non-IID as they are)
    assert [r["refused_updates"] for r in rows[1:]] == ["2"] * ROUNDS
    assert [r["members_answered"] for r in rows[1:]] == ["3"] * ROUNDS
    # ... each attacker refused in every round by its own check: the norm test (5 x the
    # round's median, taken over the updates that passed the per-update checks) and NaN
    checks: dict[str, set[str]] = {}
    for update in refused:
        checks.setdefault(update["node_id"], set()).add(_check_of(update["reason"]))
    assert len(refused) == 2 * ROUNDS
    assert sorted(map(sorted, checks.values())) == [["NaN"], ["norm"]], checks
    # ... and accuracy holds
    assert _late(rows) >= LATE_ACCURACY_FLOOR


def _verdicts(run: Run) -> list[tuple[str, ...]]:
    """Each round's verdicts in ``updates.csv``, without node ids (they differ per run)."""
    return sorted(
        tuple(value for key, value in row.items() if key not in {"node_id", "member"})
        for row in run.updates()
    )


def test_a_streamed_run_equals_the_gathered_run_to_the_bit(
    easy_dataset_5: Path, runs: Path, attacked_streamed: Run
) -> None:
    # Execute: the streamed run's config, its replies gathered in memory instead.
    gathered = _run(
        easy_dataset_5,
        runs,
        "attacked-gathered",
        *SIGN_FLIP_AND_NAN,
        "updates.aggregation=gathered",
    )
    # Assert: the same verdicts (both attackers refused in each round) and the same final
    # model, bit for bit, after every round's aggregation fed the next round's training.
    assert "the round's updates are gathered in memory" in gathered.result.stderr
    verdicts = _verdicts(attacked_streamed)
    assert verdicts == _verdicts(gathered)
    assert sum("above 5 x the median" in "".join(row) for row in verdicts) == ROUNDS
    assert sum("NaN" in "".join(row) for row in verdicts) == ROUNDS
    final = torch.load(attacked_streamed.folder / "model.pt", weights_only=True)["state_dict"]
    expected = torch.load(gathered.folder / "model.pt", weights_only=True)["state_dict"]
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[key], expected[key]) for key in final)


def test_robust_aggregation_survives_what_the_norm_test_would_have_caught(
    easy_dataset_5: Path, runs: Path
) -> None:
    # Prepare: norm test off, so the sign-flipped x10 update reaches the strategy (the
    # guard tests above show it is 10 x the others' norm: averaged in, it would ruin the
    # model).
    # Execute
    median = _run(easy_dataset_5, runs, "median", "strategy=fedmedian", *SIGN_FLIP, NO_NORM_TEST)
    # Assert: nothing refused, the attacker's update was in every round; the median still
    # learns what a clean run learns, within the slack
    rows = median.metrics()
    assert all(r["refused_updates"] == "0" and r["members_answered"] == "5" for r in rows[1:])
    assert _late(rows) >= LATE_ACCURACY_FLOOR
