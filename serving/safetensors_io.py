"""A self-contained safetensors reader and writer (torch only, torch >= 1.10).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``
(plus an optional ``"__metadata__"`` table of strings), then the raw little-endian tensor
bytes, offsets counted from the end of the header. Unlike a pickle-based ``torch.save``
file it runs no code when read, and any torch that has ``torch.frombuffer`` reads it, so
the SageMaker container needs no extra package and no particular torch release.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

import torch

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_LENGTH = struct.Struct("<Q")
_ALIGNMENT = 8  # the header is padded with spaces to this, as the reference writer does
METADATA_KEY = "__metadata__"


class SafetensorsError(ValueError):
    """Bytes that are not a well-formed safetensors file, or tensors it cannot hold."""


def to_safetensors(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> bytes:
    """Serialise named tensors (e.g. a ``state_dict``) and optional string metadata."""
    _require_little_endian()
    header: dict[str, Any] = {}
    if metadata:
        header[METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if tensor.dtype not in _NAMES:
            raise SafetensorsError(
                f"tensor {name!r} has dtype {tensor.dtype}; safetensors here holds only "
                f"{', '.join(str(d) for d in _NAMES)}"
            )
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + _LENGTH.size) % _ALIGNMENT)
    return _LENGTH.pack(len(text)) + text + b"".join(chunks)


def from_safetensors(data: bytes, source: str = "<bytes>") -> dict[str, torch.Tensor]:
    """Read the tensors of a safetensors file's bytes; ``source`` names them in errors."""
    return read_safetensors(data, source)[0]


def read_safetensors(
    data: bytes, source: str = "<bytes>"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata table of a safetensors file's bytes.

    Raises
    ------
    SafetensorsError
        If the header is truncated, not JSON, names an unknown dtype, or the offsets
        do not tile the data section exactly with sizes matching the shapes.
    """
    _require_little_endian()
    header, start = _header(data, source)
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{source}: {METADATA_KEY} must map names to strings")
    body = bytearray(data[start:])  # writable, so torch.frombuffer shares it without warning
    entries = sorted(header.items(), key=lambda item: _entry(source, *item)[2])
    tensors: dict[str, torch.Tensor] = {}
    expected_begin = 0
    for name, entry in entries:
        dtype, shape, (begin, end) = _entry(source, name, entry)
        count = _numel(shape)
        if begin != expected_begin or end - begin != count * _itemsize(dtype) or end > len(body):
            raise SafetensorsError(
                f"{source}: tensor {name!r} has data_offsets [{begin}, {end}], which do not "
                f"follow the previous tensor (at {expected_begin}) or fit its shape {shape} "
                f"and dtype, or run past the {len(body)} data bytes"
            )
        if count:
            flat = torch.frombuffer(body, dtype=dtype, count=count, offset=begin)
        else:
            flat = torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
        expected_begin = end
    if expected_begin != len(body):
        raise SafetensorsError(
            f"{source}: {len(body) - expected_begin} data bytes after the last tensor"
        )
    return tensors, dict(metadata)


def _header(data: bytes, source: str) -> tuple[dict[str, Any], int]:
    if len(data) < _LENGTH.size:
        raise SafetensorsError(f"{source}: {len(data)} bytes, too short for a safetensors file")
    (length,) = _LENGTH.unpack_from(data)
    start = _LENGTH.size + length
    if start > len(data):
        raise SafetensorsError(
            f"{source}: header claims {length} bytes but the file has {len(data)}; truncated?"
        )
    try:
        header = json.loads(data[_LENGTH.size : start])
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsError(f"{source}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{source}: header is not a JSON object")
    return header, start


def _entry(source: str, name: str, entry: Any) -> tuple[torch.dtype, list[int], tuple[int, int]]:
    try:
        dtype = _DTYPES[entry["dtype"]]
        shape = [int(n) for n in entry["shape"]]
        begin, end = (int(n) for n in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise SafetensorsError(
            f"{source}: tensor {name!r} needs dtype (one of {', '.join(_DTYPES)}), shape "
            f"and data_offsets [begin, end]; got {entry!r}"
        ) from None
    if any(n < 0 for n in shape) or begin < 0 or end < begin:
        raise SafetensorsError(f"{source}: tensor {name!r} has a negative size or offset")
    return dtype, shape, (begin, end)


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _require_little_endian() -> None:
    if sys.byteorder != "little":
        raise SafetensorsError("safetensors bytes are little-endian; this host is big-endian")
