"""Flower ``Array`` <-> numpy without the extra copies of ``Array.numpy()`` and
``Array(ndarray)``.

Flower stores an array as ``.npy`` bytes. Reading them through ``np.load`` copies every
value; writing them through ``np.save`` into a growing ``BytesIO`` copies them more than
once. Updates are large and every pass over them counts (bench/RESULTS.md, part d), so
the coordinator reads a read-only view of the bytes and writes header and values once.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from flwr.app import Array

_NPY_MAGIC = b"\x93NUMPY"
_NUMPY_STYPE = "numpy.ndarray"  # flwr's SType.NUMPY


def _npy_data_offset(data: bytes) -> int:
    """Where the values start in ``.npy`` bytes (-1 when the bytes are not ``.npy``)."""
    if len(data) < 12 or not data.startswith(_NPY_MAGIC):
        return -1
    if data[6] == 1:  # format 1.0: 2-byte header length
        return 10 + int.from_bytes(data[8:10], "little")
    return 12 + int.from_bytes(data[8:12], "little")  # formats 2.0 and 3.0


@functools.lru_cache(maxsize=64)
def _dtype(name: str) -> np.dtype:
    """``np.dtype(name)``, parsed once per name (a round reads thousands of arrays)."""
    return np.dtype(name)


def array_view(array: Array) -> np.ndarray:
    """A read-only numpy view of an Array's ``.npy`` bytes, without the copy (and the
    header parsing) of ``Array.numpy()``.

    The values are read with the dtype and shape the Array declares, and must fill the
    bytes after the ``.npy`` header exactly; a sender that misdeclares them only garbles its
    own update, which validation then judges like any other.
    """
    try:
        dtype = _dtype(array.dtype)
        shape = tuple(map(int, array.shape))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"array declares dtype {array.dtype!r}, shape {array.shape!r}") from exc
    size = math.prod(shape) * dtype.itemsize
    offset = len(array.data) - size
    if dtype.hasobject or _npy_data_offset(array.data) != offset:
        raise ValueError(f"array bytes do not hold a {array.dtype} array of shape {shape}")
    return np.frombuffer(
        array.data, dtype=dtype, count=size // dtype.itemsize, offset=offset
    ).reshape(shape)


def array_of(value: np.ndarray) -> Array:
    """A Flower Array that ``Array.numpy()`` reads back as ``value``, built with one copy
    of the values (for a C-ordered array, the very bytes ``Array(value)`` makes)."""
    value = np.require(value, requirements="C")  # keeps 0-d arrays 0-d
    if value.dtype.hasobject:
        raise ValueError(f"cannot serialise an array of dtype {value.dtype}")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(value))
    data = b"".join((header.getvalue(), value.reshape(-1).view(np.uint8).data))
    return Array(dtype=str(value.dtype), shape=tuple(value.shape), stype=_NUMPY_STYPE, data=data)
