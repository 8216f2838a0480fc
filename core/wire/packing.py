"""A message's arrays packed into one: the layout of the bytes, and checks on reading them.

Flower 1.42 sends every array of a message as objects of its own (the array's description,
then its bytes in pieces of at most 5 MiB), and on the Deployment Engine every object is a
request of its own that the SuperLink authenticates and keeps books on in its state
database. A trained ResNet-18 state holds 122 arrays, so each model a member pulls or
pushes was 213 objects (equal arrays travel once); packed into one array it is 14 (its
45 MB in 5 MiB pieces, and the message's own few).

Packing is lossless and knows nothing of dtypes: each array travels as the bytes Flower
keeps for it, with its name, dtype, shape and serialisation type (``stype``), so reading a
packed record back gives arrays equal to the ones packed. numpy and Flower free: an array
is anything with ``dtype``, ``shape``, ``stype`` and ``data`` (Flower's ``Array`` is).

Layout of the packed bytes: :data:`MAGIC`, the length of the header (8 bytes, little
endian), the header (JSON: one ``[name, dtype, shape, stype, size]`` per array, in order),
then every array's bytes in that order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

MAGIC = b"FFLPACK1"
PACKED_STYPE = "fractofl.packed.v1"
"""The ``stype`` of a packed array (its ``dtype`` is ``bytes``, its shape its length)."""
PACKED_NAME = "packed"
"""The one array a packed record holds."""
PACKED_DTYPE = "bytes"
DAMAGED_CODE = 422
"""The error code of a reply that stands for packed arrays that could not be read back,
on either side (Flower's own codes are small integers)."""
_LENGTH_BYTES = 8


class PackingError(ValueError):
    """Packed bytes that cannot be read back (damaged, truncated, or not packed)."""


class ArrayLike(Protocol):
    """What packing needs of an array (Flower's ``Array`` has it)."""

    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...] | list[int]: ...
    @property
    def stype(self) -> str: ...
    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True)
class PackedArray:
    """One array as it travels or as it is read back: Flower's four fields."""

    dtype: str
    shape: tuple[int, ...]
    stype: str
    data: bytes


def is_packed(arrays: Mapping[str, ArrayLike]) -> bool:
    """Whether ``arrays`` (one record's) is a packed record."""
    if len(arrays) != 1 or PACKED_NAME not in arrays:
        return False
    return arrays[PACKED_NAME].stype == PACKED_STYPE


def pack(arrays: Mapping[str, ArrayLike]) -> PackedArray:
    """All of ``arrays`` as one array, in their order."""
    header = [
        [name, array.dtype, [int(n) for n in array.shape], array.stype, len(array.data)]
        for name, array in arrays.items()
    ]
    encoded = json.dumps(header, separators=(",", ":")).encode()
    length = len(encoded).to_bytes(_LENGTH_BYTES, "little")
    data = b"".join([MAGIC, length, encoded, *(array.data for array in arrays.values())])
    return PackedArray(PACKED_DTYPE, (len(data),), PACKED_STYPE, data)


def unpack(packed: ArrayLike) -> dict[str, PackedArray]:
    """The arrays :func:`pack` packed into ``packed``, in their order; PackingError when
    the bytes are not a packed record whole and as described."""
    if packed.stype != PACKED_STYPE:
        raise PackingError(f"not a packed array: stype {packed.stype!r}, not {PACKED_STYPE!r}")
    data = memoryview(packed.data)
    start = len(MAGIC) + _LENGTH_BYTES
    if len(data) < start or bytes(data[: len(MAGIC)]) != MAGIC:
        raise PackingError(f"packed array of {len(data)} bytes does not start with {MAGIC!r}")
    header_end = start + int.from_bytes(data[len(MAGIC) : start], "little")
    if header_end > len(data):
        raise PackingError(f"packed array's header runs past its {len(data)} bytes")
    entries = _header(bytes(data[start:header_end]))
    declared = sum(entry[4] for entry in entries)
    if header_end + declared != len(data):
        raise PackingError(
            f"packed array's header describes {declared} bytes of arrays, it holds "
            f"{len(data) - header_end}: truncated or damaged"
        )
    arrays: dict[str, PackedArray] = {}
    offset = header_end
    for name, dtype, shape, stype, size in entries:
        if name in arrays:
            raise PackingError(f"packed array names {name!r} twice")
        arrays[name] = PackedArray(dtype, shape, stype, bytes(data[offset : offset + size]))
        offset += size
    return arrays


def _header(encoded: bytes) -> list[tuple[str, str, tuple[int, ...], str, int]]:
    """The packed header's entries, each checked for its types."""
    try:
        document = json.loads(encoded)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackingError(f"packed array's header is not JSON: {exc}") from None
    if not isinstance(document, list):
        raise PackingError("packed array's header is not a list of arrays")
    entries = []
    for entry in document:
        if not (
            isinstance(entry, list)
            and len(entry) == 5
            and all(isinstance(entry[i], str) for i in (0, 1, 3))
            and isinstance(entry[2], list)
            and all(type(n) is int and n >= 0 for n in entry[2])
            and type(entry[4]) is int
            and entry[4] >= 0
        ):
            raise PackingError(f"packed array's header has a malformed entry: {entry!r:.200}")
        entries.append((entry[0], entry[1], tuple(entry[2]), entry[3], entry[4]))
    return entries


def packed_records(
    records: Mapping[str, Mapping[str, ArrayLike]],
) -> dict[str, dict[str, PackedArray]]:
    """Every record of ``records`` that holds two arrays or more, packed (one array under
    :data:`PACKED_NAME`); records of fewer arrays and packed ones are left out: they travel
    as they are."""
    return {
        name: {PACKED_NAME: pack(arrays)}
        for name, arrays in records.items()
        if len(arrays) > 1 and not is_packed(arrays)
    }


def unpacked_records(
    records: Mapping[str, Mapping[str, ArrayLike]],
) -> dict[str, dict[str, PackedArray]]:
    """Every packed record of ``records``, read back; the others are left out."""
    return {
        name: unpack(arrays[PACKED_NAME]) for name, arrays in records.items() if is_packed(arrays)
    }
