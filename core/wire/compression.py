"""Compression of model updates on the member-to-coordinator path.

A member sends the *delta* of its training (trained weights minus the global weights it
received) as a ``dict[str, np.ndarray]`` keyed by parameter name; the coordinator decodes it
against the global weights before validating and aggregating it.

Modes (config key ``compression.mode``):

``none``
    Float tensors as float32, exactly.
``float16``
    Float tensors as float16. Values beyond float16's range (``|x| >= 65520``) become
    ``±inf``; that is left as is on purpose: the coordinator's validation refuses
    non-finite updates.
``int8``
    Per-tensor symmetric quantisation: ``scale = max|x| / 127`` (1.0 for an all-zero
    tensor), ``q = round(x / scale)`` in ``[-127, 127]``, sent as int8 under the tensor's
    key with the scale as a 0-d float32 array under ``"<key>::scale"``. A NaN or inf in the
    tensor makes the scale non-finite, and decoding refuses it.

Top-k sparsification (``compression.topk_fraction < 1``, any mode): for each float tensor
with more than one element only the ``k = max(1, ceil(fraction * numel))`` entries of
largest magnitude are sent: their flat indices, strictly increasing, as int32 under
``"<key>::index"`` and their values (in the mode's dtype; for int8 with the scale computed
over the kept values) under the key. Ties are broken by the lower index; NaN counts as the
largest magnitude, so it is always kept and reaches the coordinator's validation.

Integer and bool tensors (e.g. BatchNorm's ``num_batches_tracked``) are always sent as they
are and never sparsified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MODES",
    "CompressionError",
    "CompressionSpec",
    "decode_update",
    "encode_update",
    "max_abs_error",
    "payload_bytes",
]

MODES = ("none", "float16", "int8")
SCALE_SUFFIX = "::scale"
INDEX_SUFFIX = "::index"

_VALUE_DTYPES: dict[str, np.dtype] = {
    "none": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
}
_INDEX_DTYPE = np.dtype(np.int32)
_INT8_MAX = 127
# Float16 values at or beyond this round to inf (65504 is the largest finite one).
_FLOAT16_OVERFLOW = 65520.0
_FLOAT16_TINY = 2.0**-24  # smallest float16 subnormal
_FLOAT32_TINY = np.float32(np.finfo(np.float32).smallest_subnormal)


class CompressionError(ValueError):
    """A compressed update is malformed: wrong keys, dtypes, shapes, scales or indices."""


@dataclass(frozen=True)
class CompressionSpec:
    """How members compress their updates.

    Parameters
    ----------
    mode : str
        One of :data:`MODES`: ``"none"``, ``"float16"`` or ``"int8"``.
    topk_fraction : float
        Fraction of each float tensor's entries to send, in ``(0, 1]``; 1 sends all.
    """

    mode: str = "none"
    topk_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"compression.mode={self.mode!r} is not a compression mode; "
                f"use one of {', '.join(MODES)}"
            )
        fraction = self.topk_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0.0 < fraction <= 1.0
        ):
            raise ValueError(
                f"compression.topk_fraction={fraction!r} must be a number in (0, 1] "
                "(1 sends every entry)"
            )

    @property
    def sparse(self) -> bool:
        """Whether top-k sparsification is on."""
        return self.topk_fraction < 1.0


def topk_count(numel: int, fraction: float) -> int:
    """Number of entries top-k keeps of a tensor with ``numel`` elements.

    Parameters
    ----------
    numel : int
        Number of elements of the tensor.
    fraction : float
        ``CompressionSpec.topk_fraction``.

    Returns
    -------
    int
        ``max(1, ceil(fraction * numel))``, at most ``numel``.
    """
    # The tiny slack keeps e.g. 0.7 * 10 = 7.000000000000001 from rounding up to 8.
    return min(numel, max(1, math.ceil(fraction * numel - 1e-9)))


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f"


def _is_sparse(numel: int, spec: CompressionSpec) -> bool:
    return spec.sparse and numel > 1


def _topk_indices(flat: np.ndarray, k: int) -> np.ndarray:
    """Flat indices (ascending) of the ``k`` largest ``|flat|``; ties go to the lower index."""
    magnitude = np.abs(flat)
    # NaN compares false with everything; as inf it is kept, so validation sees it.
    np.nan_to_num(magnitude, copy=False, nan=np.inf)
    n = magnitude.size
    threshold = np.partition(magnitude, n - k)[n - k]  # the k-th largest magnitude
    keep = magnitude > threshold
    missing = k - int(np.count_nonzero(keep))
    if missing:
        keep[np.flatnonzero(magnitude == threshold)[:missing]] = True
    return np.flatnonzero(keep).astype(_INDEX_DTYPE)


def _quantise_int8(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Int8 codes and the 0-d float32 scale of ``values`` (float32)."""
    amax = np.float32(np.max(np.abs(values))) if values.size else np.float32(0.0)
    if amax == 0:
        scale = np.float32(1.0)
    else:
        # Dividing a subnormal amax by 127 in float32 may underflow to 0.
        scale = np.maximum(amax / np.float32(_INT8_MAX), _FLOAT32_TINY)
    if not np.isfinite(scale):
        # NaN/inf in the tensor: send a non-finite scale (decode refuses it) and dummy codes.
        return np.zeros(values.shape, dtype=np.int8), np.array(scale, dtype=np.float32)
    # out= keeps 0-d inputs arrays (a plain division would return a numpy scalar).
    codes = np.divide(values, scale, out=np.empty(values.shape, dtype=np.float32))
    np.rint(codes, out=codes)
    np.clip(codes, -_INT8_MAX, _INT8_MAX, out=codes)
    return codes.astype(np.int8), np.array(scale, dtype=np.float32)


def encode_update(delta: Mapping[str, np.ndarray], spec: CompressionSpec) -> dict[str, np.ndarray]:
    """Compress a model update for sending to the coordinator.

    Parameters
    ----------
    delta : Mapping[str, np.ndarray]
        Trained weights minus the global weights, keyed by parameter name.
    spec : CompressionSpec
        The compression the coordinator asked for.

    Returns
    -------
    dict[str, np.ndarray]
        The payload: per float tensor the values under its key, plus ``"<key>::scale"``
        in int8 mode and ``"<key>::index"`` when sparsified; integer and bool tensors as
        they are. Arrays may share memory with ``delta``.

    Raises
    ------
    ValueError
        If a key of ``delta`` ends with ``::scale`` or ``::index`` (it would collide).
    """
    value_dtype = _VALUE_DTYPES[spec.mode]
    payload: dict[str, np.ndarray] = {}
    for key, tensor in delta.items():
        if key.endswith((SCALE_SUFFIX, INDEX_SUFFIX)):
            raise ValueError(
                f"update key {key!r} ends with {SCALE_SUFFIX!r} or {INDEX_SUFFIX!r}, which "
                "the compressed payload reserves; rename the parameter"
            )
        array = np.asarray(tensor)
        if not _is_float(array.dtype):
            payload[key] = array
            continue
        values = array.astype(np.float32, copy=False)
        if _is_sparse(values.size, spec):
            flat = values.reshape(-1)
            index = _topk_indices(flat, topk_count(flat.size, spec.topk_fraction))
            payload[f"{key}{INDEX_SUFFIX}"] = index
            values = flat[index]
        if spec.mode == "int8":
            payload[key], payload[f"{key}{SCALE_SUFFIX}"] = _quantise_int8(values)
        else:
            with np.errstate(over="ignore"):  # float16 overflow to inf is documented
                payload[key] = values.astype(value_dtype, copy=False)
    return payload


def expected_keys(reference: Mapping[str, np.ndarray], spec: CompressionSpec) -> set[str]:
    """The payload keys :func:`encode_update` produces for a delta shaped like ``reference``.

    Parameters
    ----------
    reference : Mapping[str, np.ndarray]
        The global model's tensors.
    spec : CompressionSpec
        The compression in force.

    Returns
    -------
    set[str]
        Every tensor key, plus its ``::scale`` / ``::index`` companions where they apply.
    """
    keys: set[str] = set()
    for key, ref in reference.items():
        keys.add(key)
        if not _is_float(ref.dtype):
            continue
        if spec.mode == "int8":
            keys.add(f"{key}{SCALE_SUFFIX}")
        if _is_sparse(ref.size, spec):
            keys.add(f"{key}{INDEX_SUFFIX}")
    return keys


def _list_keys(keys: set[str], limit: int = 5) -> str:
    shown = sorted(keys)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(repr(k) for k in shown[:limit]) + more


def _array(payload: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    array = payload[key]
    if not isinstance(array, np.ndarray):
        raise CompressionError(
            f"compressed update key {key!r}: expected a numpy array, got {type(array).__name__}"
        )
    return array


def _check_dtype(key: str, array: np.ndarray, dtype: np.dtype, what: str) -> None:
    if array.dtype != dtype:
        raise CompressionError(
            f"compressed update key {key!r}: expected {what} of dtype {dtype}, got "
            f"{array.dtype}; member and coordinator must use the same compression settings"
        )


def _decode_scale(payload: Mapping[str, np.ndarray], key: str) -> np.float32:
    scale_key = f"{key}{SCALE_SUFFIX}"
    scale = _array(payload, scale_key)
    _check_dtype(scale_key, scale, np.dtype(np.float32), "the int8 scale")
    if scale.shape != ():
        raise CompressionError(
            f"compressed update key {scale_key!r}: the int8 scale must be a 0-d array, "
            f"got shape {scale.shape}"
        )
    value = np.float32(scale[()])
    if not np.isfinite(value) or value < 0:
        raise CompressionError(
            f"compressed update key {scale_key!r}: the int8 scale is {float(value)}; it must "
            "be finite and >= 0 (a NaN or inf in the member's update makes it non-finite)"
        )
    return value


def _decode_values(
    payload: Mapping[str, np.ndarray], key: str, spec: CompressionSpec
) -> np.ndarray:
    """The float32 values sent under ``key`` (dense tensor or top-k values), any shape."""
    values = _array(payload, key)
    _check_dtype(key, values, _VALUE_DTYPES[spec.mode], f"{spec.mode!r} values")
    if spec.mode != "int8":
        return values.astype(np.float32, copy=False)
    if values.size and (values.min() < -_INT8_MAX or values.max() > _INT8_MAX):
        raise CompressionError(
            f"compressed update key {key!r}: int8 codes must lie in [-127, 127], got "
            f"[{values.min()}, {values.max()}]"
        )
    scale = _decode_scale(payload, key)
    decoded = values.astype(np.float32)
    decoded *= scale
    return decoded


def _decode_index(
    payload: Mapping[str, np.ndarray], key: str, numel: int, spec: CompressionSpec
) -> np.ndarray:
    index_key = f"{key}{INDEX_SUFFIX}"
    index = _array(payload, index_key)
    _check_dtype(index_key, index, _INDEX_DTYPE, "top-k indices")
    k = topk_count(numel, spec.topk_fraction)
    if index.shape != (k,):
        raise CompressionError(
            f"compressed update key {index_key!r}: expected {k} top-k indices (1-d) for "
            f"{numel} entries at topk_fraction={spec.topk_fraction}, got shape {index.shape}"
        )
    if index[0] < 0 or index[-1] >= numel or (k > 1 and not np.all(index[1:] > index[:-1])):
        raise CompressionError(
            f"compressed update key {index_key!r}: top-k indices must be strictly increasing "
            f"and within [0, {numel}); got min {index.min()}, max {index.max()}"
        )
    return index


def _decode_float(
    payload: Mapping[str, np.ndarray], key: str, ref: np.ndarray, spec: CompressionSpec
) -> np.ndarray:
    if not _is_sparse(ref.size, spec):
        raw = _array(payload, key)
        if raw.shape != ref.shape:
            raise CompressionError(
                f"compressed update key {key!r}: shape {raw.shape} does not match the global "
                f"model's {ref.shape}"
            )
        return _decode_values(payload, key, spec)
    index = _decode_index(payload, key, ref.size, spec)
    values = _decode_values(payload, key, spec)
    if values.shape != index.shape:
        raise CompressionError(
            f"compressed update key {key!r}: {values.shape} top-k values (1-d expected) for "
            f"{index.size} indices under {key + INDEX_SUFFIX!r}"
        )
    dense = np.zeros(ref.size, dtype=np.float32)
    dense[index] = values
    return dense.reshape(ref.shape)


def decode_update(
    payload: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    spec: CompressionSpec,
) -> dict[str, np.ndarray]:
    """Decode a member's compressed update against the global weights.

    Parameters
    ----------
    payload : Mapping[str, np.ndarray]
        What :func:`encode_update` produced on the member.
    reference : Mapping[str, np.ndarray]
        The global model's tensors the member trained from; gives the keys, shapes and
        dtypes the update must have.
    spec : CompressionSpec
        The compression the coordinator asked for.

    Returns
    -------
    dict[str, np.ndarray]
        The delta, keyed like ``reference``: float32 for float tensors, the reference dtype
        for integer and bool tensors. Arrays may share memory with ``payload``.

    Raises
    ------
    CompressionError
        If the payload's keys differ from what ``encode_update`` produces for ``reference``
        under ``spec``, or a tensor has the wrong dtype or shape, an int8 scale is
        non-finite or negative, or top-k indices are out of range, unordered, not int32 or
        do not match their values in number.
    """
    expected = expected_keys(reference, spec)
    present = set(payload.keys())
    if present != expected:
        problems = []
        if expected - present:
            problems.append(f"missing {_list_keys(expected - present)}")
        if present - expected:
            problems.append(f"unexpected {_list_keys(present - expected)}")
        raise CompressionError(
            f"compressed update keys do not match the global model under compression "
            f"mode={spec.mode!r}, topk_fraction={spec.topk_fraction}: {'; '.join(problems)}"
        )
    delta: dict[str, np.ndarray] = {}
    for key, ref in reference.items():
        if _is_float(ref.dtype):
            delta[key] = _decode_float(payload, key, ref, spec)
            continue
        array = _array(payload, key)
        _check_dtype(key, array, ref.dtype, "an unchanged integer delta")
        if array.shape != ref.shape:
            raise CompressionError(
                f"compressed update key {key!r}: shape {array.shape} does not match the global "
                f"model's {ref.shape}"
            )
        delta[key] = array
    return delta


def payload_bytes(payload: Mapping[str, np.ndarray]) -> int:
    """Total size of a payload's arrays in bytes (sum of ``nbytes``).

    Parameters
    ----------
    payload : Mapping[str, np.ndarray]
        An encoded update.

    Returns
    -------
    int
        The bytes of array data, without any framing.
    """
    return sum(int(array.nbytes) for array in payload.values())


def _tensor_error(values: np.ndarray, spec: CompressionSpec) -> float:
    """Worst-case absolute error of one float tensor's round trip."""
    if values.size == 0:
        return 0.0
    magnitude = np.abs(values.reshape(-1))
    amax = float(np.max(magnitude))
    if not math.isfinite(amax):
        return math.inf
    dropped = 0.0
    if _is_sparse(magnitude.size, spec):
        k = topk_count(magnitude.size, spec.topk_fraction)
        if k < magnitude.size:
            n = magnitude.size
            dropped = float(np.partition(magnitude, n - k - 1)[n - k - 1])
    if spec.mode == "none":
        kept = 0.0
    elif spec.mode == "float16":
        kept = math.inf if amax >= _FLOAT16_OVERFLOW else amax * 2.0**-11 + _FLOAT16_TINY
    else:
        scale = amax / _INT8_MAX if amax > 0 else 0.0
        # Slack for the float32 rounding of the scale and of code * scale.
        kept = scale / 2 + amax * 2.0**-20 + 2.0**-140
    return max(kept, dropped)


def max_abs_error(spec: CompressionSpec, delta: Mapping[str, np.ndarray]) -> float:
    """The stated worst-case per-element absolute error of an encode/decode round trip.

    Parameters
    ----------
    spec : CompressionSpec
        The compression in force.
    delta : Mapping[str, np.ndarray]
        The update to be sent.

    Returns
    -------
    float
        0 for ``none``; for ``float16`` ``max|x| * 2**-11`` plus float16's smallest
        subnormal (inf once a value overflows float16); for ``int8`` half the scale plus a
        tiny rounding slack; with top-k at least the largest dropped ``|x|``. The maximum
        over tensors; integer tensors are exact. Inf if the delta holds a NaN or inf.
    """
    bound = 0.0
    for tensor in delta.values():
        array = np.asarray(tensor)
        if _is_float(array.dtype):
            bound = max(bound, _tensor_error(array.astype(np.float32, copy=False), spec))
    return bound
