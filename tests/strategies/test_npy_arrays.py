"""Flower Arrays read and written without the extra copies, checked against Flower's own."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array

from fractofl.strategies.npy_arrays import array_of, array_view


def test_array_view_reads_flower_arrays_without_copying() -> None:
    # Prepare
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    array = Array(values)
    # Execute
    view = array_view(array)
    # Assert: same values as Flower's own decoding, backed by the message's bytes.
    np.testing.assert_array_equal(view, array.numpy())
    assert view.dtype == np.float32 and not view.flags.writeable
    assert np.shares_memory(view, np.frombuffer(array.data, dtype=np.uint8))


@pytest.mark.parametrize(
    "values",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array(7, dtype=np.int64),  # BatchNorm's num_batches_tracked is 0-d
        np.zeros((0, 3), dtype=np.float16),
        np.arange(6, dtype=np.float64).reshape(2, 3)[:, ::2],  # not contiguous
    ],
)
def test_array_of_makes_the_bytes_flower_makes(values: np.ndarray) -> None:
    # Execute
    ours = array_of(values)
    flowers = Array(np.ascontiguousarray(values) if values.ndim else values)
    # Assert: interchangeable with Flower's own Array, and read back exactly.
    assert ours.data == flowers.data
    assert (ours.dtype, ours.shape, ours.stype) == (flowers.dtype, flowers.shape, flowers.stype)
    np.testing.assert_array_equal(ours.numpy(), values)
    np.testing.assert_array_equal(array_view(ours), values)


def test_array_of_reads_back_a_fortran_ordered_array() -> None:
    values = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(array_of(values).numpy(), values)


def test_array_of_refuses_object_arrays() -> None:
    with pytest.raises(ValueError, match="dtype object"):
        array_of(np.array([{"a": 1}], dtype=object))
