"""A member's side of SCAFFOLD (``strategy=scaffold``): its control variate and the global
model it last received, kept in its Flower context between rounds (by its SuperNode, or
by the Simulation Engine), as FedBN keeps a member's BatchNorm layers.

In round ``r`` the coordinator's train config carries the federation's mean step sum of
round ``r - 1`` (:data:`~fractofl.core.wire.update_protocol.STEP_SUM_KEY`); with the
global model the member kept from that round it gives the federation's control variate
(:mod:`fractofl.core.learning.control_variates`). A member that has no model from the
round just before (its first round, a missed round, a resumed run) trains that round
uncorrected and sets its control from it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fractofl.core.learning.control_variates import (
    correction,
    federation_control,
    member_control,
)
from fractofl.core.wire.update_protocol import STEP_SUM_KEY

CONTROL_RECORD = "scaffold-member-control"
RECEIVED_RECORD = "scaffold-received-global"
ROUND_RECORD = "scaffold-round"
ROUND_KEY = "received-in-round"


def _arrays(state: RecordDict, name: str) -> dict[str, np.ndarray] | None:
    if name not in state.array_records:
        return None
    return {key: array.numpy() for key, array in state.array_records[name].items()}


def gradient_correction(
    state: RecordDict,
    received: Mapping[str, np.ndarray],
    config: Mapping[str, object],
    server_round: int,
) -> dict[str, np.ndarray] | None:
    """``c - c_i`` for this round's training (parameters only), or None when the member
    cannot know ``c``: no step sum from the coordinator, or no global model kept from
    round ``server_round - 1``."""
    step_sum = config.get(STEP_SUM_KEY)
    previous = _arrays(state, RECEIVED_RECORD)
    kept_round = state.config_records.get(ROUND_RECORD, ConfigRecord()).get(ROUND_KEY)
    if not isinstance(step_sum, int | float) or step_sum <= 0 or previous is None:
        return None
    if kept_round != server_round - 1:
        return None
    federation = federation_control(received, previous, float(step_sum))
    return correction(federation, _arrays(state, CONTROL_RECORD))


def as_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The correction as the training loop takes it."""
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}


def keep_controls(
    state: RecordDict,
    received: Mapping[str, np.ndarray],
    delta: Mapping[str, np.ndarray],
    parameters: list[str],
    step_sum: float,
    applied: Mapping[str, np.ndarray] | None,
    server_round: int,
) -> None:
    """After training: keep the member's new control variate and the global model it
    received this round (its parameters), for the next round."""
    control = member_control(delta, parameters, step_sum, applied)
    state.array_records[CONTROL_RECORD] = ArrayRecord(
        {key: Array(value) for key, value in control.items()}
    )
    state.array_records[RECEIVED_RECORD] = ArrayRecord(
        {key: Array(np.ascontiguousarray(received[key])) for key in parameters}
    )
    state.config_records[ROUND_RECORD] = ConfigRecord({ROUND_KEY: server_round})
