"""The weighted mean of member updates, in numpy, from their decoded deltas.

``reference + sum_i w_i delta_i / sum_i w_i`` equals FedAvg's weighted mean of the member
weights ``reference + delta_i``; computing it from the deltas the guard has already
decoded avoids re-serialising full weights for Flower to decode again, which on a
ResNet-18 costs several times the aggregation itself (see bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]


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
    shares = [np.float32(w / total) for w in weights]
    result: dict[str, np.ndarray] = {}
    for key, ref in reference.items():
        acc = np.zeros(ref.shape, dtype=np.float32)
        for delta, share in zip(deltas, shares, strict=True):
            acc += share * delta[key].astype(np.float32, copy=False)
        if np.issubdtype(ref.dtype, np.floating):
            acc += ref
            result[key] = acc.astype(ref.dtype, copy=False)
        else:
            result[key] = np.asarray(ref + np.rint(acc).astype(ref.dtype))
    return result
