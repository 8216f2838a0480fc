"""The weighted mean of member updates, from their decoded deltas.

``reference + sum_i w_i delta_i / sum_i w_i`` equals FedAvg's weighted mean of the member
weights ``reference + delta_i``; computing it from the deltas the guard has already
decoded avoids re-serialising full weights for Flower to decode again, which on a
ResNet-18 costs several times the aggregation itself (see bench/RESULTS.md).

:class:`RunningMean` folds the deltas in one at a time, so only the running sum and the
delta being added are in memory (streaming aggregation); :func:`weighted_mean_update` is
the same computation over a list. Both give the same bits for the same order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

Arrays = Mapping[str, np.ndarray]

# The deltas are read-only views of the received bytes and torch only reads them; its
# warning about non-writable arrays is filtered once here, not around every tensor.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def update_shares(weights: Sequence[float]) -> list[float]:
    """Each update's share ``w_i / sum(w)`` of the mean; ValueError when they do not sum
    to a positive number."""
    total = float(sum(weights))
    if not weights or not total > 0:
        raise ValueError(f"the update weights sum to {total}; they must be positive")
    return [w / total for w in weights]


class RunningMean:
    """``reference + sum_i share_i * delta_i``, folded in one delta at a time.

    Floating-point tensors are accumulated in float32 with one fused pass per delta
    (torch's ``add`` with ``alpha`` is an axpy; numpy's ``acc += w * d`` first writes
    ``w * d`` to a temporary the size of the tensor). Integer tensors (counters such as
    BatchNorm's ``num_batches_tracked``) move by the rounded weighted mean of their deltas.
    """

    def __init__(self, reference: Arrays) -> None:
        self.reference = reference
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, delta: Arrays, share: float) -> None:
        """Fold in one member's ``delta`` with its ``share`` of the mean."""
        first = not self._sums
        for key, ref in self.reference.items():
            value = torch.from_numpy(np.asarray(delta[key], dtype=np.float32))
            if not first:
                self._sums[key].add_(value, alpha=share)
            elif np.issubdtype(ref.dtype, np.floating):
                start = torch.from_numpy(np.asarray(ref, dtype=np.float32))
                self._sums[key] = torch.add(start, value, alpha=share)
            else:
                self._sums[key] = torch.mul(value, share)

    def result(self) -> dict[str, np.ndarray]:
        """The mean so far, in the reference's dtypes."""
        if not self._sums:
            raise ValueError("the mean of no update is undefined")
        result: dict[str, np.ndarray] = {}
        for key, ref in self.reference.items():
            total = self._sums[key].numpy()
            if np.issubdtype(ref.dtype, np.floating):
                result[key] = total.astype(ref.dtype, copy=False)
            else:
                result[key] = np.asarray(ref + np.rint(total).astype(ref.dtype))
        return result


def weighted_mean_update(
    reference: Arrays, deltas: Sequence[Arrays], weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """``reference`` moved by the weighted mean of ``deltas``, in the reference's dtypes
    (:class:`RunningMean` over a list)."""
    if not deltas or len(deltas) != len(weights):
        raise ValueError(f"need one weight per update, got {len(deltas)} and {len(weights)}")
    mean = RunningMean(reference)
    for delta, share in zip(deltas, update_shares(weights), strict=True):
        mean.add(delta, share)
    return mean.result()
