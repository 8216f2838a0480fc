"""The coordinator's checkpoint after every completed round, and reading it back.

``checkpoint.pt`` in the run folder holds everything the next round depends on: the
global arrays, the strategy's own state (e.g. FedAdam's moments), the round number, the
metrics rows so far, the random states of Python, numpy and torch, the last published
registry version and the elapsed time. It is a ``torch.save`` dictionary of tensors and
primitives (loaded with ``weights_only=True``: no code is unpickled) written atomically,
so after a crash it describes exactly the last completed round.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fractofl.core.files.atomic import atomic_write
from fractofl.server.errors import RoundStateError
from fractofl.server.random_state import RandomState
from fractofl.server.recorder import RoundRow
from fractofl.strategies.state import StrategyState

STATE_FILE = "checkpoint.pt"
STATE_FORMAT = 1


@dataclass
class RoundState:
    """Everything needed to continue a run after ``round``."""

    round: int
    run_id: str
    config_digest: str
    arrays: dict[str, np.ndarray]
    rows: list[RoundRow]
    random_state: RandomState
    strategy: StrategyState = field(default_factory=dict)
    published_version: int | None = None
    elapsed_s: float = 0.0
    privacy: str = ""
    """The privacy accountant's state as JSON (differential privacy only)."""


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    # np.require keeps 0-d arrays (BatchNorm counters) 0-d; ascontiguousarray would not.
    return {
        key: torch.from_numpy(np.require(value, requirements="C")) for key, value in arrays.items()
    }


def _arrays(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in tensors.items()}


def save_round_state(state: RoundState, folder: Path) -> Path:
    """Write ``folder/checkpoint.pt`` atomically; return its path."""
    numpy_state = state.random_state.numpy
    payload = {
        "format": STATE_FORMAT,
        "round": state.round,
        "run_id": state.run_id,
        "config_digest": state.config_digest,
        "arrays": _tensors(state.arrays),
        "rows": [dataclasses.asdict(row) for row in state.rows],
        "random": {
            "python": state.random_state.python,
            # numpy's state is (name, uint32 keys, pos, has_gauss, cached_gaussian)
            "numpy": (
                numpy_state[0],
                torch.from_numpy(np.asarray(numpy_state[1], dtype=np.int64)),
                *numpy_state[2:],
            ),
            "torch": state.random_state.torch,
        },
        "strategy": {name: _tensors(values) for name, values in state.strategy.items()},
        "published_version": state.published_version,
        "elapsed_s": state.elapsed_s,
        "privacy": state.privacy,
    }
    return atomic_write(folder / STATE_FILE, lambda handle: torch.save(payload, handle))


def load_round_state(folder: Path) -> RoundState:
    """Read ``folder/checkpoint.pt``, or explain why the run cannot be resumed."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise RoundStateError(
            f"{path} does not exist: the run in {folder} completed no round to resume "
            "from (start it again instead)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RoundStateError(f"checkpoint {path} is unreadable: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise RoundStateError(f"{path} is not a fractofl round checkpoint (format {STATE_FORMAT})")
    numpy_state = payload["random"]["numpy"]
    return RoundState(
        round=int(payload["round"]),
        run_id=str(payload["run_id"]),
        config_digest=str(payload["config_digest"]),
        arrays=_arrays(payload["arrays"]),
        rows=[RoundRow(**row) for row in payload["rows"]],
        random_state=RandomState(
            python=payload["random"]["python"],
            numpy=(
                numpy_state[0],
                numpy_state[1].numpy().astype(np.uint32),
                *numpy_state[2:],
            ),
            torch=payload["random"]["torch"],
        ),
        strategy={name: _arrays(values) for name, values in payload["strategy"].items()},
        published_version=payload["published_version"],
        elapsed_s=float(payload["elapsed_s"]),
        privacy=str(payload.get("privacy", "")),
    )
