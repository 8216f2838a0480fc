"""Compression of model updates: round trips within the stated bound, sizes, malformed input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fractofl.core.wire.compression import (
    MODES,
    CompressionError,
    CompressionSpec,
    decode_update,
    encode_update,
    max_abs_error,
    payload_bytes,
)

FLOAT_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (16, 3, 3, 3),
    "conv1.bias": (16,),
    "fc.weight": (4, 64),
    "temperature": (),
    "head.gain": (1,),
}
COUNTER = "bn1.num_batches_tracked"


def make_update(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A (global weights, delta) pair shaped like a small CNN's state_dict."""
    rng = np.random.default_rng(seed)
    reference = {
        key: rng.normal(size=shape).astype(np.float32) for key, shape in FLOAT_SHAPES.items()
    }
    reference[COUNTER] = np.array(100, dtype=np.int64)
    delta = {
        key: (rng.normal(size=shape) * 0.01).astype(np.float32)
        for key, shape in FLOAT_SHAPES.items()
    }
    delta[COUNTER] = np.array(25, dtype=np.int64)
    return reference, delta


def float_numels() -> dict[str, int]:
    return {key: math.prod(shape) for key, shape in FLOAT_SHAPES.items()}


@pytest.mark.parametrize("topk", [1.0, 0.1])
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_within_stated_bound(mode: str, topk: float) -> None:
    # Prepare
    reference, delta = make_update()
    spec = CompressionSpec(mode, topk)
    # Execute
    decoded = decode_update(encode_update(delta, spec), reference, spec)
    bound = max_abs_error(spec, delta)
    # Assert
    assert set(decoded) == set(reference)
    assert decoded[COUNTER].dtype == np.int64
    assert int(decoded[COUNTER]) == 25
    worst = 0.0
    for key in FLOAT_SHAPES:
        assert decoded[key].dtype == np.float32
        assert decoded[key].shape == reference[key].shape
        worst = max(worst, float(np.max(np.abs(decoded[key] - delta[key]))))
    assert worst <= bound
    if mode == "none" and topk == 1.0:
        assert bound == 0.0
    else:
        assert 0.0 < bound < 0.05  # tight enough to mean something for deltas of ~0.01


def test_float16_bound_is_tight_enough_and_none_is_exact() -> None:
    # Prepare
    _, delta = make_update(1)
    # Execute
    bound16 = max_abs_error(CompressionSpec("float16"), delta)
    amax = max(float(np.max(np.abs(delta[key]))) for key in FLOAT_SHAPES)
    # Assert
    assert bound16 == pytest.approx(amax * 2.0**-11 + 2.0**-24)
    assert max_abs_error(CompressionSpec("none"), delta) == 0.0


def test_int8_scale_semantics() -> None:
    # Prepare: max |x| is 2.54, so the scale is 0.02 and -2.54 maps to -127.
    delta = {"w": np.array([0.0, 0.01, 0.031, -2.54, 1.0], dtype=np.float32)}
    spec = CompressionSpec("int8")
    # Execute
    payload = encode_update(delta, spec)
    # Assert
    scale = payload["w::scale"]
    assert scale.dtype == np.float32
    assert scale.shape == ()
    assert float(scale) == pytest.approx(2.54 / 127)
    assert payload["w"].dtype == np.int8
    assert payload["w"].tolist() == [0, 0, 2, -127, 50]  # 0.01/0.02 = 0.5 rounds to even
    decoded = decode_update(payload, {"w": np.zeros(5, np.float32)}, spec)["w"]
    assert decoded.tolist() == pytest.approx([0.0, 0.0, 0.04, -2.54, 1.0], abs=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_zero_tensor(mode: str) -> None:
    # Prepare
    delta = {"w": np.zeros((3, 4), dtype=np.float32)}
    spec = CompressionSpec(mode)
    # Execute
    payload = encode_update(delta, spec)
    decoded = decode_update(payload, delta, spec)
    # Assert
    if mode == "int8":
        assert float(payload["w::scale"]) == 1.0
    assert np.array_equal(decoded["w"], delta["w"])
    assert max_abs_error(spec, delta) <= 1e-7


def test_topk_keeps_exactly_the_largest_entries() -> None:
    # Prepare: 20 entries, k = 2; the two largest are at flat indices 17 and 3.
    values = np.linspace(-0.1, 0.1, 20, dtype=np.float32).reshape(4, 5)
    values[0, 3] = -5.0
    values[3, 2] = 4.0
    delta = {"w": values}
    spec = CompressionSpec("none", 0.1)
    # Execute
    payload = encode_update(delta, spec)
    decoded = decode_update(payload, {"w": np.zeros((4, 5), np.float32)}, spec)["w"]
    # Assert
    assert payload["w::index"].dtype == np.int32
    assert payload["w::index"].tolist() == [3, 17]
    assert payload["w"].tolist() == [-5.0, 4.0]
    expected = np.zeros((4, 5), np.float32)
    expected[0, 3], expected[3, 2] = -5.0, 4.0
    assert np.array_equal(decoded, expected)
    # The largest dropped |x| bounds the error.
    assert max_abs_error(spec, delta) == pytest.approx(0.1)


def test_topk_breaks_ties_by_lower_index_and_counts_with_ceil() -> None:
    # Prepare: all magnitudes equal; 0.7 * 10 must keep 7, not 8 (float rounding).
    delta = {"w": np.array([1, -1, 1, -1, 1, -1, 1, -1, 1, -1], dtype=np.float32)}
    # Execute
    payload = encode_update(delta, CompressionSpec("float16", 0.7))
    # Assert
    assert payload["w::index"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert payload["w"].dtype == np.float16


def test_topk_int8_scale_is_over_kept_values() -> None:
    # Prepare
    rng = np.random.default_rng(3)
    delta = {"w": rng.normal(size=1000).astype(np.float32)}
    spec = CompressionSpec("int8", 0.05)
    # Execute
    payload = encode_update(delta, spec)
    # Assert
    kept = delta["w"][payload["w::index"]]
    assert payload["w"].shape == (50,)
    assert float(payload["w::scale"]) == pytest.approx(float(np.max(np.abs(kept))) / 127)
    assert int(np.max(np.abs(payload["w"].astype(np.int16)))) == 127


@pytest.mark.parametrize("topk", [1.0, 0.1])
@pytest.mark.parametrize(("mode", "value_bytes"), [("none", 4), ("float16", 2), ("int8", 1)])
def test_payload_bytes_matches_independent_count(mode: str, value_bytes: int, topk: float) -> None:
    # Prepare: dense n * value bytes, top-k k * (value + 4 index bytes), 4 per int8 scale;
    # 0-d and 1-element tensors stay dense; the int64 counter is 8 bytes.
    _, delta = make_update()
    spec = CompressionSpec(mode, topk)
    expected = 8
    for n in float_numels().values():
        expected += 4 if mode == "int8" else 0
        if topk < 1 and n > 1:
            expected += math.ceil(topk * n) * (value_bytes + 4)
        else:
            expected += n * value_bytes
    # Execute
    sent = payload_bytes(encode_update(delta, spec))
    # Assert
    assert sent == expected


def test_size_ratios_for_a_large_tensor() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    delta = {"layer.weight": rng.normal(size=(512, 512, 3)).astype(np.float32)}
    # Execute
    sizes = {mode: payload_bytes(encode_update(delta, CompressionSpec(mode))) for mode in MODES}
    # Assert
    assert sizes["float16"] / sizes["none"] == pytest.approx(0.5)
    assert sizes["int8"] / sizes["none"] == pytest.approx(0.25, abs=1e-4)


@pytest.mark.parametrize("topk", [1.0, 0.1])
@pytest.mark.parametrize("mode", ["none", "float16"])
def test_nan_survives_none_and_float16(mode: str, topk: float) -> None:
    # Prepare
    reference, delta = make_update()
    delta["fc.weight"][1, 7] = np.nan
    spec = CompressionSpec(mode, topk)
    # Execute
    decoded = decode_update(encode_update(delta, spec), reference, spec)
    # Assert
    assert np.isnan(decoded["fc.weight"][1, 7])
    assert math.isinf(max_abs_error(spec, delta))


@pytest.mark.parametrize("topk", [1.0, 0.1])
def test_nan_in_int8_gives_non_finite_scale_that_decode_refuses(topk: float) -> None:
    # Prepare
    reference, delta = make_update()
    delta["fc.weight"][1, 7] = np.nan
    spec = CompressionSpec("int8", topk)
    # Execute
    payload = encode_update(delta, spec)
    # Assert
    assert not np.isfinite(payload["fc.weight::scale"])
    with pytest.raises(CompressionError, match=r"fc\.weight::scale"):
        decode_update(payload, reference, spec)


def test_float16_overflow_becomes_inf() -> None:
    # Prepare
    delta = {"w": np.array([1.0, 1e6], dtype=np.float32)}
    spec = CompressionSpec("float16")
    # Execute
    decoded = decode_update(encode_update(delta, spec), delta, spec)["w"]
    # Assert
    assert decoded[0] == 1.0
    assert np.isposinf(decoded[1])
    assert math.isinf(max_abs_error(spec, delta))


def test_integer_tensors_are_sent_unchanged_and_dense() -> None:
    # Prepare
    delta = {
        "steps": np.arange(12, dtype=np.int64).reshape(3, 4),
        "mask": np.array([True, False, True]),
    }
    spec = CompressionSpec("int8", 0.1)
    # Execute
    payload = encode_update(delta, spec)
    decoded = decode_update(payload, delta, spec)
    # Assert
    assert set(payload) == {"steps", "mask"}
    assert payload["steps"].dtype == np.int64
    assert np.array_equal(decoded["steps"], delta["steps"])
    assert np.array_equal(decoded["mask"], delta["mask"])


def _corrupt(payload: dict[str, np.ndarray], key: str, value: np.ndarray | None) -> None:
    if value is None:
        del payload[key]
    else:
        payload[key] = value


@pytest.mark.parametrize(
    ("mode", "topk", "key", "bad", "message"),
    [
        ("none", 1.0, "fc.weight", None, "missing 'fc.weight'"),
        ("none", 1.0, "fc.weight::scale", np.array(1.0, np.float32), "unexpected"),
        ("int8", 1.0, "fc.weight::scale", None, "missing 'fc.weight::scale'"),
        ("none", 0.1, "fc.weight::index", None, "missing 'fc.weight::index'"),
        ("none", 0.1, "temperature::index", np.array([0], np.int32), "temperature::index"),
        ("none", 1.0, "fc.weight", np.zeros((64, 4), np.float32), "fc.weight"),
        ("none", 1.0, "fc.weight", np.zeros((4, 64), np.float64), "fc.weight"),
        ("float16", 1.0, "fc.weight", np.zeros((4, 64), np.float32), "fc.weight"),
        ("int8", 1.0, "fc.weight", np.zeros((4, 64), np.int16), "fc.weight"),
        ("int8", 1.0, "fc.weight", np.full((4, 64), -128, np.int8), "fc.weight"),
        ("int8", 1.0, "fc.weight::scale", np.array(np.inf, np.float32), "fc.weight::scale"),
        ("int8", 1.0, "fc.weight::scale", np.array(-0.5, np.float32), "fc.weight::scale"),
        ("int8", 1.0, "fc.weight::scale", np.array(0.5, np.float64), "fc.weight::scale"),
        ("int8", 1.0, "fc.weight::scale", np.array([0.5], np.float32), "fc.weight::scale"),
        ("none", 0.1, "fc.weight::index", np.arange(26, dtype=np.int64), "fc.weight::index"),
        ("none", 0.1, "fc.weight::index", np.arange(230, 256, dtype=np.int32) + 1, "index"),
        ("none", 0.1, "fc.weight::index", np.arange(-1, 25, dtype=np.int32), "index"),
        ("none", 0.1, "fc.weight::index", np.zeros(26, np.int32), "fc.weight::index"),
        ("none", 0.1, "fc.weight::index", np.arange(27, dtype=np.int32), "fc.weight::index"),
        ("none", 0.1, "fc.weight", np.zeros(25, np.float32), "fc.weight"),
        ("none", 0.1, "fc.weight", np.zeros((26, 1), np.float32), "fc.weight"),
        ("none", 1.0, COUNTER, np.array(25, np.int32), COUNTER),
        ("none", 1.0, COUNTER, np.array([25], np.int64), COUNTER),
        ("none", 1.0, "conv1.bias", [0.0] * 16, "conv1.bias"),
    ],
)
def test_malformed_payload_raises_naming_the_key(
    mode: str, topk: float, key: str, bad: object, message: str
) -> None:
    # Prepare
    reference, delta = make_update()
    spec = CompressionSpec(mode, topk)
    payload = encode_update(delta, spec)
    _corrupt(payload, key, bad)  # type: ignore[arg-type]
    # Execute / Assert
    with pytest.raises(CompressionError) as excinfo:
        decode_update(payload, reference, spec)
    assert message in str(excinfo.value)


def test_spec_mismatch_is_reported_as_key_mismatch() -> None:
    # Prepare
    reference, delta = make_update()
    payload = encode_update(delta, CompressionSpec("int8"))
    # Execute / Assert
    with pytest.raises(CompressionError, match=r"unexpected 'conv1\.bias::scale'"):
        decode_update(payload, reference, CompressionSpec("float16"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "bf16"}, "none, float16, int8"),
        ({"topk_fraction": 0.0}, "topk_fraction"),
        ({"topk_fraction": 1.5}, "topk_fraction"),
        ({"topk_fraction": float("nan")}, "topk_fraction"),
    ],
)
def test_spec_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompressionSpec(**kwargs)  # type: ignore[arg-type]


def test_encode_is_deterministic_and_rejects_reserved_keys() -> None:
    # Prepare
    _, delta = make_update()
    spec = CompressionSpec("int8", 0.1)
    # Execute
    first, second = encode_update(delta, spec), encode_update(delta, spec)
    # Assert
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[key], second[key]) for key in first)
    with pytest.raises(ValueError, match="w::index"):
        encode_update({"w::index": np.zeros(3, np.float32)}, spec)


def test_int8_subnormal_tensor_stays_within_bound() -> None:
    # Prepare: max |x| / 127 underflows float32, so the scale must not become 0.
    delta = {"w": np.array([1e-44, -3e-45, 0.0], dtype=np.float32)}
    spec = CompressionSpec("int8")
    # Execute
    payload = encode_update(delta, spec)
    decoded = decode_update(payload, delta, spec)["w"]
    # Assert
    assert float(payload["w::scale"]) > 0.0
    assert float(np.max(np.abs(decoded - delta["w"]))) <= max_abs_error(spec, delta)
