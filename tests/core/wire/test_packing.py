"""Packing a record's arrays into one: lossless round trips, and damaged bytes refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fractofl.core.wire.packing import (
    MAGIC,
    PACKED_NAME,
    PACKED_STYPE,
    PackedArray,
    PackingError,
    is_packed,
    pack,
    packed_records,
    unpack,
    unpacked_records,
)


def _array(value: np.ndarray, stype: str = "numpy.ndarray") -> PackedArray:
    # Raw bytes stand in for Flower's .npy bytes: packing never reads them.
    return PackedArray(str(value.dtype), tuple(value.shape), stype, value.tobytes())


ARRAYS = {
    "conv.weight": _array(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
    "bn.num_batches_tracked": _array(np.array(7, dtype=np.int64)),
    "empty": _array(np.zeros((0, 3), dtype=np.float16)),
    "scale": _array(np.array([0.5], dtype=np.float32), stype="custom.stype"),
}


def test_a_packed_record_reads_back_as_the_same_arrays_in_the_same_order() -> None:
    # Execute
    packed = pack(ARRAYS)
    back = unpack(packed)
    # Assert
    assert packed.stype == PACKED_STYPE and packed.shape == (len(packed.data),)
    assert is_packed({PACKED_NAME: packed})
    assert list(back) == list(ARRAYS)
    assert back == ARRAYS
    assert len(packed.data) < sum(len(a.data) for a in ARRAYS.values()) + 400


def test_only_records_of_several_arrays_are_packed_and_only_packed_ones_unpacked() -> None:
    records = {
        "arrays": ARRAYS,
        "one": {"w": ARRAYS["scale"]},
        "none": {},
    }
    # Execute
    packed = packed_records(records)
    # Assert: one array or none travels as it is; a packed record is not packed twice.
    assert list(packed) == ["arrays"]
    assert packed_records(packed) == {}
    assert unpacked_records(records) == {}
    assert unpacked_records(packed) == {"arrays": ARRAYS}


def _damaged(data: bytes) -> PackedArray:
    return PackedArray("bytes", (len(data),), PACKED_STYPE, data)


def _header_then(header: object, body: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return MAGIC + len(encoded).to_bytes(8, "little") + encoded + body


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        (_array(np.zeros(3)), "not a packed array"),
        (_damaged(b"FFL"), "does not start with"),
        (_damaged(b"NOTMAGIC" + bytes(8)), "does not start with"),
        (_damaged(MAGIC + (10**9).to_bytes(8, "little")), "header runs past"),
        (_damaged(_header_then("x")), "not a list"),
        (_damaged(MAGIC + (3).to_bytes(8, "little") + b"\xff\xfe["), "not JSON"),
        (_damaged(_header_then([["w", "float32", [2], "s"]])), "malformed entry"),
        (_damaged(_header_then([["w", "float32", [-1], "s", 0]])), "malformed entry"),
        (_damaged(_header_then([["w", "float32", [2], "s", 8]], b"1234")), "truncated"),
        (_damaged(_header_then([["w", "f", [1], "s", 1]] * 2, b"ab")), "twice"),
    ],
)
def test_damaged_packed_bytes_are_refused_with_what_is_wrong(
    packed: PackedArray, message: str
) -> None:
    with pytest.raises(PackingError, match=message):
        unpack(packed)


def test_a_truncated_packed_record_is_refused() -> None:
    data = pack(ARRAYS).data
    with pytest.raises(PackingError, match="truncated"):
        unpack(_damaged(data[:-1]))
