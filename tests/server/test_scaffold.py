"""SCAFFOLD on the Simulation Engine: members keep their control variates and the last
global model in their Flower context between rounds, train round 1 uncorrected and every
later round with the federation's correction, and the coordinator checkpoints the mean
step sum it sends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fractofl.server.round_state import load_round_state
from tests.conftest import easy_overrides, run_fractofl

pytestmark = pytest.mark.slow

ROUNDS = 3


def test_members_correct_their_gradients_from_the_second_round_on(
    easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare
    overrides = [
        o for o in easy_overrides(easy_dataset, tmp_path / "runs") if "federation.rounds" not in o
    ]
    # Execute
    result = run_fractofl(
        "simulate",
        *overrides,
        "strategy=scaffold",
        f"federation.rounds={ROUNDS}",
        "train.local_epochs=1",
        "output.name=run",
        cwd=tmp_path,
    )
    # Assert: the coordinator's log of what came back in every round
    assert result.returncode == 0, result.stderr[-3000:]
    said = re.findall(
        r"round (\d+): SCAFFOLD: (\d+) of (\d+) updates trained with drift correction; "
        r"mean step sum ([\d.e+-]+)",
        result.stderr,
    )
    assert [(int(r), int(c), int(n)) for r, c, n, _ in said] == [(1, 0, 2), (2, 2, 2), (3, 2, 2)]
    step_sums = {float(s) for *_, s in said}
    assert len(step_sums) == 1  # the same members take the same steps every round
    state = load_round_state(tmp_path / "runs" / "run")
    assert state.round == ROUNDS
    assert float(state.strategy["step_sum"]["step_sum"]) == pytest.approx(step_sums.pop(), 1e-3)
