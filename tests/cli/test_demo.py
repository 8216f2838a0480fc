"""``fractofl demo`` (what ``make run`` runs): simulate, then serve and query a local endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow


def test_demo_trains_publishes_serves_and_answers(easy_dataset: Path, tmp_path: Path) -> None:
    # Execute
    result = run_fractofl("demo", *easy_overrides(easy_dataset, tmp_path / "runs"), cwd=tmp_path)
    # Assert: the run finished, and its final version answered over HTTP for every class.
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final test accuracy" in result.stdout
    assert "serving v000002 (signature verified)" in result.stdout  # round 2 of 2
    table = result.stdout.split("serving v000002")[1].splitlines()
    rows = [line.split() for line in table if "/" in line.split(" ")[0]]
    assert [row[1] for row in rows] == [c for c in DEFAULT_CLASSES for _ in range(2)]
    assert all(row[2] in DEFAULT_CLASSES and 0.0 <= float(row[3]) <= 1.0 for row in rows)
