"""The weighted mean of member updates, from their decoded deltas.

``reference + sum_i w_i delta_i / sum_i w_i`` equals FedAvg's weighted mean of the member
weights ``reference + delta_i``; computing it from the deltas the guard has already
decoded avoids re-serialising full weights for Flower to decode again, which on a
ResNet-18 costs several times the aggregation itself (see bench/RESULTS.md).
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


def _weighted_sum(
    start: np.ndarray | None, deltas: Sequence[np.ndarray], shares: Sequence[float]
) -> np.ndarray:
    """``start + sum_i shares[i] * deltas[i]`` in a new float32 array, one fused pass per
    delta (torch's ``add`` with ``alpha`` is an axpy; numpy's ``acc += w * d`` first
    writes ``w * d`` to a temporary the size of the tensor). ``start=None`` means zero."""
    tensors = [torch.from_numpy(delta) for delta in deltas]
    if start is None:
        acc = torch.mul(tensors[0], shares[0])
    else:
        acc = torch.add(torch.from_numpy(start), tensors[0], alpha=shares[0])
    for tensor, share in zip(tensors[1:], shares[1:], strict=True):
        acc.add_(tensor, alpha=share)
    return acc.numpy()


def weighted_mean_update(
    reference: Arrays, deltas: Sequence[Arrays], weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """``reference`` moved by the weighted mean of ``deltas``, in the reference's dtypes.

    Floating-point tensors are accumulated in float32; integer tensors (counters such as
    BatchNorm's ``num_batches_tracked``) move by the rounded weighted mean of their deltas.
    """
    if not deltas or len(deltas) != len(weights):
        raise ValueError(f"need one weight per update, got {len(deltas)} and {len(weights)}")
    total = float(sum(weights))
    if not total > 0:
        raise ValueError(f"the update weights sum to {total}; they must be positive")
    shares = [w / total for w in weights]
    result: dict[str, np.ndarray] = {}
    for key, ref in reference.items():
        values = [np.asarray(delta[key], dtype=np.float32) for delta in deltas]
        if np.issubdtype(ref.dtype, np.floating):
            start = np.asarray(ref, dtype=np.float32)
            result[key] = _weighted_sum(start, values, shares).astype(ref.dtype, copy=False)
        else:
            moved = np.rint(_weighted_sum(None, values, shares)).astype(ref.dtype)
            result[key] = np.asarray(ref + moved)
    return result
