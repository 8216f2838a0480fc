"""FedBN (Li et al., ICLR 2021): a member's BatchNorm layers stay with the member.

Members of a consortium image with different microscopes, so the statistics their
BatchNorm layers learn differ by instrument; averaged across members they fit nobody.
With ``strategy.local_batchnorm`` each member keeps its own BatchNorm weights, biases and
running statistics in its Flower context (kept by its SuperNode between rounds, or by the
Simulation Engine), puts them into every global model it receives, and sends no change of
them: their entries of its update are zero, so the coordinator's copy never moves.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from torch import nn

from fractofl.core.model.architectures import batchnorm_keys

LOCAL_BATCHNORM_RECORD = "fedbn-local-batchnorm"


def restore_local_batchnorm(model: nn.Module, state: RecordDict) -> bool:
    """Put the member's own BatchNorm layers, kept in ``state``, into ``model`` (the global
    model just received); False in its first round, when it has none yet."""
    if LOCAL_BATCHNORM_RECORD not in state.array_records:
        return False
    local = state.array_records[LOCAL_BATCHNORM_RECORD].to_torch_state_dict()
    model.load_state_dict(local, strict=False)
    return True


def keep_local_batchnorm(model: nn.Module, state: RecordDict) -> None:
    """Keep ``model``'s BatchNorm layers (after local training) in the member's ``state``."""
    keys = batchnorm_keys(model)
    kept = {key: value.detach().cpu() for key, value in model.state_dict().items() if key in keys}
    state.array_records[LOCAL_BATCHNORM_RECORD] = ArrayRecord(
        {key: Array(value.numpy()) for key, value in kept.items()}
    )


def without_batchnorm_change(
    delta: dict[str, np.ndarray], keys: frozenset[str]
) -> dict[str, np.ndarray]:
    """``delta`` with its BatchNorm entries zeroed in place: nothing of them leaves."""
    for key in keys & delta.keys():
        delta[key][...] = 0
    return delta
