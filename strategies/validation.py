"""Checks on decoded member updates, in plain numpy (no networking, no Flower).

An update is refused when it is malformed (keys, shapes or dtypes other than the global
model's), holds NaN or Inf, or changes the model far more than the other members' updates
of the round: an L2 norm above ``max_norm_multiple`` times the round's median norm. The
norm test is a common defence against scaled (model-replacement) updates, e.g. Bagdasaryan
et al., 2020, "How To Backdoor Federated Learning"; it needs at least three updates to
have a meaningful median.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]

MIN_UPDATES_FOR_NORM_TEST = 3


def structural_problem(delta: Arrays, reference: Arrays) -> str | None:
    """Why ``delta`` does not fit ``reference``: keys, shapes, dtypes (None when it fits).

    Reads no values: :func:`measure_update` finds NaN and Inf in the same pass that
    computes the norm.
    """
    missing = sorted(set(reference) - set(delta))
    extra = sorted(set(delta) - set(reference))
    if missing or extra:
        return f"keys differ from the global model (missing {missing[:3]}, extra {extra[:3]})"
    for key, ref in reference.items():
        value = delta[key]
        if value.shape != ref.shape:
            return f"{key}: shape {value.shape} instead of {ref.shape}"
        expected = np.float32 if np.issubdtype(ref.dtype, np.floating) else ref.dtype
        if value.dtype != expected:
            return f"{key}: dtype {value.dtype} instead of {np.dtype(expected)}"
    return None


def measure_update(
    delta: Arrays, statistics: frozenset[str] = frozenset()
) -> tuple[float, str | None]:
    """L2 norm of the floating-point parameters of an update, and a problem when a
    tensor holds NaN or Inf (its sum of squares is then not finite).

    Counters and the ``statistics`` keys (BatchNorm running means and variances, whose
    changes dwarf and vary more than the weights') are checked but left out of the norm.
    One pass over the values: the sum of squares is NaN or Inf exactly when a value is,
    or when values are so large (above ~1e19) that no honest update comes near.
    """
    total = 0.0
    for key, value in delta.items():
        if np.issubdtype(value.dtype, np.floating):
            flat = value.ravel()
            squares = float(np.dot(flat, flat))
            if not np.isfinite(squares):
                return float("nan"), f"{key}: holds NaN or Inf (or values beyond 1e19)"
            if key not in statistics:
                total += squares
    return float(np.sqrt(total)), None


VARIANCE_SUFFIX = "running_var"  # PyTorch's name for BatchNorm's running variance


def statistics_problem(delta: Arrays, reference: Arrays, statistics: frozenset[str]) -> str | None:
    """Why an update's running statistics are impossible (None when they are not): a
    running variance (a statistic named ``*running_var``) must stay non-negative."""
    for key in sorted(statistics & set(reference)):
        if key.endswith(VARIANCE_SUFFIX) and ((reference[key] + delta[key]) < 0).any():
            return f"{key}: a running variance would turn negative"
    return None


def update_norm(delta: Arrays) -> float:
    """L2 norm of the floating-point part of an update (NaN when it holds NaN or Inf)."""
    return measure_update(delta)[0]


def norm_outliers(norms: Sequence[float], max_norm_multiple: float) -> list[int]:
    """Positions whose norm exceeds ``max_norm_multiple`` x the median norm.

    With fewer than :data:`MIN_UPDATES_FOR_NORM_TEST` norms, or a zero median, no
    position is flagged: there is no reliable reference to compare with.
    """
    if max_norm_multiple <= 0:
        raise ValueError(f"updates.max_norm_multiple={max_norm_multiple} must be positive")
    if len(norms) < MIN_UPDATES_FOR_NORM_TEST:
        return []
    median = float(np.median(np.asarray(norms, dtype=np.float64)))
    if median <= 0.0:
        return []
    limit = max_norm_multiple * median
    return [i for i, norm in enumerate(norms) if norm > limit]
