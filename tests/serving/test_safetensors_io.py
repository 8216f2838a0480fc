"""Our safetensors reader/writer against the official ``safetensors`` package, both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch

from fractofl.core.model.architectures import build_model
from fractofl.serving.safetensors_io import (
    SafetensorsError,
    from_safetensors,
    read_safetensors,
    to_safetensors,
)


def _every_dtype() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=generator)
    return {
        "f32": base,
        "f64": base.double(),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": torch.arange(-6, 6).reshape(2, 6),
        "i32": torch.arange(7, dtype=torch.int32),
        "i16": torch.tensor([-3, 0, 3], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(42),  # e.g. BatchNorm's num_batches_tracked
        "empty": torch.zeros(0, 4),
        "strided": base.t(),  # not contiguous
    }


def _assert_identical(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name


def test_official_package_reads_our_file_to_identical_tensors(tmp_path: Path) -> None:
    # Prepare
    tensors = _every_dtype()
    path = tmp_path / "ours.safetensors"
    # Execute
    path.write_bytes(to_safetensors(tensors, {"fractofl_version": "v000001"}))
    # Assert
    _assert_identical(safetensors.torch.load_file(path), tensors)
    with safetensors.safe_open(path, framework="pt") as handle:
        assert handle.metadata() == {"fractofl_version": "v000001"}


def test_our_reader_reads_a_file_written_by_the_official_package(tmp_path: Path) -> None:
    # Prepare: a real state_dict plus every dtype, written by the reference implementation
    tensors = {**build_model("small_cnn", num_classes=4, width=8).state_dict(), **_every_dtype()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = tmp_path / "official.safetensors"
    safetensors.torch.save_file(tensors, path, metadata={"by": "official"})
    # Execute
    got, metadata = read_safetensors(path.read_bytes(), str(path))
    # Assert
    _assert_identical(got, tensors)
    assert metadata == {"by": "official"}


def test_a_model_state_dict_round_trips_and_loads_strictly() -> None:
    # Prepare
    model = build_model("small_cnn", num_classes=4, width=8)
    # Execute
    restored = from_safetensors(to_safetensors(model.state_dict()))
    fresh = build_model("small_cnn", num_classes=4, width=8)
    fresh.load_state_dict(restored)
    # Assert
    _assert_identical(fresh.state_dict(), model.state_dict())


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda data: data[:5], "too short"),
        (lambda data: data[:40], "truncated"),
        (lambda data: data[:-1], "do not follow"),
        (lambda data: data + b"\0", "after the last tensor"),
        (lambda data: data[:8] + b"x" + data[9:], "not JSON"),
        (lambda data: data.replace(b'"F32"', b'"F99"'), "needs dtype"),
    ],
)
def test_malformed_files_are_refused_with_the_reason(mangle: object, message: str) -> None:
    # Prepare
    data = to_safetensors({"weight": torch.ones(2, 3), "bias": torch.zeros(3)})
    # Execute / Assert
    with pytest.raises(SafetensorsError, match=message):
        from_safetensors(mangle(data), "weights.safetensors")  # type: ignore[operator]
