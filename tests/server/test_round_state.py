"""The coordinator's per-round checkpoint: what goes in comes back, random streams included."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fractofl.server.errors import RoundStateError
from fractofl.server.recorder import RoundRow
from fractofl.server.round_state import (
    STATE_FILE,
    RandomState,
    RoundState,
    load_round_state,
    save_round_state,
)


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_round_state_round_trips_and_random_streams_continue(tmp_path: Path) -> None:
    # Prepare
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    rows = [RoundRow(0, 0, math.nan, 0.25, 0.1, 1.4, math.nan, 0, 0, math.nan, 0.1)]
    state = RoundState(
        round=3,
        run_id="run-7",
        config_digest="abc123",
        arrays={"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(9, np.int64)},
        rows=rows,
        random_state=RandomState.capture(),
        strategy={
            "v_t": {"w": np.full((2, 3), 0.5, np.float32)},
            # FedAvgM's momentum, by name, in the model's (not alphabetical) order
            "momentum": {name: np.full(2, i, np.float32) for i, name in enumerate("zam")},
        },
        elapsed_s=12.5,
    )
    expected_draws = _draws()
    # Execute
    save_round_state(state, tmp_path)
    back = load_round_state(tmp_path)
    back.random_state.restore()
    # Assert
    assert _draws() == expected_draws
    assert (back.round, back.run_id, back.config_digest, back.elapsed_s) == (
        3,
        "run-7",
        "abc123",
        12.5,
    )
    assert back.arrays["n"].shape == () and int(back.arrays["n"]) == 9
    np.testing.assert_array_equal(back.arrays["w"], state.arrays["w"])
    np.testing.assert_array_equal(back.strategy["v_t"]["w"], state.strategy["v_t"]["w"])
    assert list(back.strategy["momentum"]) == ["z", "a", "m"]
    assert [float(v[0]) for v in back.strategy["momentum"].values()] == [0.0, 1.0, 2.0]
    assert back.rows[0].test_accuracy == 0.25 and math.isnan(back.rows[0].mean_train_loss)


def test_missing_or_foreign_checkpoint_is_explained(tmp_path: Path) -> None:
    with pytest.raises(RoundStateError, match="completed no round to resume"):
        load_round_state(tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(RoundStateError, match="unreadable"):
        load_round_state(tmp_path)
