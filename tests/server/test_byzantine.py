"""One Byzantine member among five, on Flower's Simulation Engine: the update guard
refuses what it must, and robust aggregation survives what the guard lets through."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from tests.conftest import FIVE_MEMBERS_PER_CLASS, easy_overrides, run_fractofl

pytestmark = pytest.mark.slow

NO_NORM_TEST = "updates.max_norm_multiple=1e9"
ROUNDS = 5


def _run(data: Path, out: Path, *overrides: str) -> list[dict[str, str]]:
    result = run_fractofl(
        "simulate",
        *easy_overrides(data, out, members=5, per_class=FIVE_MEMBERS_PER_CLASS),
        "federation.min_train_members=4",
        f"federation.rounds={ROUNDS}",
        *overrides,
        cwd=data.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _updates(out: Path) -> list[dict[str, str]]:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    with open(run_dir / "updates.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _accuracy(rows: list[dict[str, str]]) -> float:
    return float(rows[-1]["test_accuracy"])


@pytest.fixture(scope="module")
def clean_accuracy(easy_dataset_5: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    rows = _run(easy_dataset_5, tmp_path_factory.mktemp("clean") / "runs")
    assert all(r["refused_updates"] == "0" for r in rows[1:])
    return _accuracy(rows)


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("sign_flip", "above 5 x the median"),
        ("noise", "above 5 x the median"),
        ("nan", "NaN"),
    ],
)
def test_guard_refuses_the_attacker_every_round(
    attack: str, reason: str, easy_dataset_5: Path, tmp_path: Path, clean_accuracy: float
) -> None:
    # Execute: member 0 attacks in every round.
    out = tmp_path / "runs"
    rows = _run(easy_dataset_5, out, "federation.attackers=1", f"federation.attack={attack}")
    # Assert: one refusal per round, always the same node, with the reason; accuracy holds.
    assert [r["refused_updates"] for r in rows[1:]] == ["1"] * ROUNDS
    assert [r["members_answered"] for r in rows[1:]] == ["4"] * ROUNDS
    refused = [u for u in _updates(out) if u["accepted"] == "0"]
    assert len(refused) == ROUNDS and len({u["node_id"] for u in refused}) == 1
    assert all(re.search(reason, u["reason"]) for u in refused)
    # Refusing the attacker also loses its (non-IID) data, hence some slack.
    assert _accuracy(rows) >= max(0.5, clean_accuracy - 0.2)


def test_robust_aggregation_survives_what_the_norm_test_would_have_caught(
    easy_dataset_5: Path, tmp_path: Path
) -> None:
    # Prepare: norm test off, so the sign-flipped x10 update reaches the strategy.
    attack = ("federation.attackers=1", "federation.attack=sign_flip", NO_NORM_TEST)
    # Execute
    median_clean = _run(easy_dataset_5, tmp_path / "a" / "runs", "strategy=fedmedian")
    median = _run(easy_dataset_5, tmp_path / "b" / "runs", "strategy=fedmedian", *attack)
    plain = _run(easy_dataset_5, tmp_path / "c" / "runs", *attack)
    # Assert: nothing refused; the median stays near its clean run (mean of the last two
    # rounds, to damp round-to-round noise on this small set); FedAvg collapses.
    assert all(r["refused_updates"] == "0" for r in median[1:] + plain[1:])
    assert _late(median) >= _late(median_clean) - 0.2
    assert _late(median) >= _late(plain) + 0.2


def _late(rows: list[dict[str, str]]) -> float:
    return sum(float(r["test_accuracy"]) for r in rows[-2:]) / 2
