"""inference.py's four functions on an extracted artifact, in this process.

The answers must equal the training path's (read_grayscale, the checkpoint's
preprocessing and model), and every bad input must raise its HTTP status.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fractofl.core.images.imageio import read_grayscale
from fractofl.core.trust.registry import ModelRegistry, version_name
from fractofl.core.trust.signing import create_key_pair, load_public_key, public_pem
from fractofl.serving.inference import (
    TRUSTED_KEY_ENV,
    TRUSTED_KEY_FILE,
    ModelLoadError,
    ServedModel,
    decode_input,
    encode_output,
    model_fn,
    predict_image,
)
from fractofl.serving.package import extract_artifact, package_version
from fractofl.serving.request_errors import RequestError
from tests.serving.conftest import PublishedModel, extracted_model, flip_a_byte, publish_model

GOOD = {
    "gray.png": "image/png",
    "gray.jpg": "image/jpeg",
    "gray16.tif": "image/tiff",
    "gray16.png": "application/x-image",
    "rgba.png": "image/png",
}


def expected_probabilities(published: PublishedModel, image: np.ndarray) -> list[float]:
    """What the training code computes for a grayscale image."""
    network = published.checkpoint.build_model()
    tensor = published.checkpoint.preprocessing.to_tensor(image)[None]
    with torch.no_grad():
        return torch.softmax(network(tensor), dim=1)[0].tolist()


@pytest.fixture
def verified_dir(model_dir: Path, published: PublishedModel, tmp_path: Path) -> Path:
    """A copy of the extracted artifact with the trusted key next to the model."""
    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    shutil.copyfile(published.public_key, folder / TRUSTED_KEY_FILE)
    return folder


@pytest.fixture
def served(verified_dir: Path) -> ServedModel:
    return model_fn(str(verified_dir))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_answers_equal_the_training_path(
    served: ServedModel, published: PublishedModel, images: dict[str, Path], name: str
) -> None:
    # Prepare
    path = images[name]
    # Execute
    prediction = predict_image(decode_input(path.read_bytes(), GOOD[name]), served)
    body, content_type = encode_output(prediction, "application/json")
    # Assert
    expected = expected_probabilities(published, read_grayscale(path))
    assert served.signature_verified
    assert content_type == "application/json"
    assert prediction["model_version"] == version_name(1) == published.version
    assert prediction["classes"] == list(published.checkpoint.classes)
    assert list(prediction["probabilities"].values()) == pytest.approx(expected, abs=1e-6)
    assert prediction["class"] == published.checkpoint.classes[int(np.argmax(expected))]
    assert body.startswith(b"{")


def test_a_preview_is_the_decoded_image_as_an_8_bit_png(
    served: ServedModel, images: dict[str, Path]
) -> None:
    # Prepare: a 16-bit TIFF, which browsers cannot show
    body = images["gray16.tif"].read_bytes()
    decoded = read_grayscale(images["gray16.tif"])
    # Execute
    answer = predict_image(decode_input(body, "image/tiff; preview=true"), served)
    plain = predict_image(decode_input(body, "image/tiff"), served)
    # Assert
    preview = answer["image"]
    assert (preview["height"], preview["width"]) == decoded.shape
    with Image.open(io.BytesIO(base64.b64decode(preview["png_base64"]))) as png:
        assert png.mode == "L"
        levels = np.asarray(png)
    assert np.array_equal(levels, np.round(decoded * 255).astype(np.uint8))
    assert "heatmap" not in answer and "image" not in plain
    assert answer["probabilities"] == plain["probabilities"]


def test_npy_arrays_are_read_like_image_files(
    served: ServedModel, published: PublishedModel, images: dict[str, Path]
) -> None:
    # Prepare: the PNG's pixels as a 2-D array and as an H x W x 3 array
    gray = np.load(images["gray.npy"])
    rgb = io.BytesIO()
    np.save(rgb, np.dstack([gray] * 3))
    # Execute
    flat = predict_image(decode_input(images["gray.npy"].read_bytes(), "application/x-npy"), served)
    colour = predict_image(decode_input(rgb.getvalue(), "application/x-npy"), served)
    # Assert
    expected = expected_probabilities(published, read_grayscale(images["gray.png"]))
    assert list(flat["probabilities"].values()) == pytest.approx(expected, abs=1e-6)
    assert list(colour["probabilities"].values()) == pytest.approx(expected, abs=1e-5)


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"", "image/png", 400, "empty request body"),
        (b"hello", "text/plain", 415, "'text/plain' is not supported"),
        (b"hello", None, 415, "'(none)' is not supported"),
        (b"hello", "image/png", 400, "not a readable PNG"),
        ("truncated.jpg", "image/jpeg", 400, "cannot decode pixels"),
        ("gray.png", "application/json", 415, "'application/json' is not supported"),
        ("object.npy", "application/x-npy", 400, "object arrays are refused"),
        (_npy(np.zeros((2, 2, 2, 2))), "application/x-npy", 400, "is not an image"),
        (_npy(np.zeros((0, 5))), "application/x-npy", 400, "has no pixels"),
        (_npy(np.array([[np.nan]])), "application/x-npy", 400, "NaN"),
    ],
)
def test_bad_inputs_raise_their_http_status(
    images: dict[str, Path], body: bytes | str, content_type: str | None, status: int, reason: str
) -> None:
    # Prepare
    data = images[body].read_bytes() if isinstance(body, str) else body
    # Execute / Assert
    with pytest.raises(RequestError) as caught:
        decode_input(data, content_type)  # type: ignore[arg-type]
    assert caught.value.status_code == status
    assert reason in caught.value.message


def test_output_accepts_json_only(served: ServedModel, images: dict[str, Path]) -> None:
    # Prepare
    prediction = predict_image(decode_input(images["gray.png"].read_bytes(), "image/png"), served)
    # Execute / Assert
    for accept in (None, "", "*/*", "application/json; q=1", "text/csv, application/*"):
        assert encode_output(prediction, accept)[1] == "application/json"
    with pytest.raises(RequestError) as caught:
        encode_output(prediction, "text/csv")
    assert caught.value.status_code == 406


def test_key_from_environment_verifies(
    model_dir: Path, published: PublishedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.setenv(TRUSTED_KEY_ENV, published.public_key.read_text())
    # Execute / Assert
    assert model_fn(str(model_dir)).signature_verified


def test_without_a_key_it_loads_and_says_it_did_not_verify(
    model_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.delenv(TRUSTED_KEY_ENV, raising=False)
    # Execute
    with caplog.at_level(logging.WARNING, logger="fractofl.inference"):
        served = model_fn(str(model_dir))
    # Assert
    assert not served.signature_verified
    assert f"signature NOT verified; set {TRUSTED_KEY_ENV}" in caplog.text


def test_another_key_is_refused(verified_dir: Path, tmp_path: Path) -> None:
    # Prepare
    other = create_key_pair(tmp_path / "other.key", tmp_path / "other.pub", None)
    (verified_dir / TRUSTED_KEY_FILE).write_text(public_pem(other))
    # Execute / Assert
    with pytest.raises(ModelLoadError, match="not signed by the trusted key"):
        model_fn(str(verified_dir))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("model.safetensors", "does not match the SHA-256 in serving.json"),
        ("metadata.json", "not signed by the trusted key"),
        ("signature", "not signed by the trusted key"),
    ],
)
def test_altered_files_are_refused(verified_dir: Path, name: str, message: str) -> None:
    # Prepare
    flip_a_byte(verified_dir / name)
    # Execute / Assert
    with pytest.raises(ModelLoadError, match=message):
        model_fn(str(verified_dir))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "v000099"}, "is for version 'v000099' but the signed metadata is for"),
        ({"weights": "../model.safetensors"}, "names no weights file beside it"),
        ({"weights": "missing.safetensors"}, "cannot read"),
        ({"format": 99}, "is not of format 1"),
    ],
)
def test_an_inconsistent_serving_json_is_refused(
    verified_dir: Path, change: dict[str, object], message: str
) -> None:
    # Prepare
    path = verified_dir / "serving.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    # Execute / Assert
    with pytest.raises(ModelLoadError, match=message):
        model_fn(str(verified_dir))


def test_probabilities_are_calibrated_with_the_signed_temperature(
    published: PublishedModel, images: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare: the same weights published with a temperature of 2.5 in the signed metrics
    hot = publish_model(
        tmp_path / "hot", published.checkpoint.build_model(), metrics={"temperature": 2.5}
    )
    folder = extracted_model(hot, tmp_path / "out")
    shutil.copyfile(hot.public_key, folder / TRUSTED_KEY_FILE)
    image = read_grayscale(images["gray.png"])
    network = published.checkpoint.build_model()
    with torch.no_grad():
        logits = network(published.checkpoint.preprocessing.to_tensor(image)[None])
    # Execute
    served = model_fn(str(folder))
    prediction = predict_image(decode_input(images["gray.png"].read_bytes(), "image/png"), served)
    # Assert: softmax(logits / 2.5), the same answer, less sure than uncalibrated
    expected = torch.softmax(logits / 2.5, dim=1)[0].tolist()
    assert served.temperature == 2.5
    assert list(prediction["probabilities"].values()) == pytest.approx(expected, abs=1e-6)
    assert max(expected) < max(expected_probabilities(published, image))
    assert prediction["class"] == published.checkpoint.classes[int(np.argmax(expected))]


def test_a_signed_temperature_that_is_no_temperature_is_refused(
    published: PublishedModel, tmp_path: Path
) -> None:
    # Prepare
    bad = publish_model(
        tmp_path / "bad", published.checkpoint.build_model(), metrics={"temperature": -1.0}
    )
    folder = extracted_model(bad, tmp_path / "out")
    shutil.copyfile(bad.public_key, folder / TRUSTED_KEY_FILE)
    # Execute / Assert
    with pytest.raises(ModelLoadError, match=r"metrics.temperature=-1.0 is not a temperature"):
        model_fn(str(folder))


def test_an_answer_to_refer_to_an_expert_says_why(
    published: PublishedModel, images: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare: a version whose signed OOD threshold every image is above, served with a
    # confidence floor no answer reaches; and the same weights without either
    network = published.checkpoint.build_model()
    strict = publish_model(
        tmp_path / "strict",
        network,
        metrics={"temperature": 1.0, "ood_energy_threshold": -1e9, "ood_coverage": 0.95},
    )
    folder = extract_artifact(
        package_version(
            ModelRegistry(strict.registry),
            "latest",
            load_public_key(strict.public_key),
            tmp_path / "out",
            min_confidence=1.0,
        ).path,
        tmp_path / "out" / "model",
    )
    shutil.copyfile(strict.public_key, folder / TRUSTED_KEY_FILE)
    body = images["gray.png"].read_bytes()
    # Execute
    flagged = predict_image(decode_input(body, "image/png"), model_fn(str(folder)))
    lenient = model_fn(str(folder))
    lenient = dataclasses.replace(lenient, min_confidence=0.0, ood_energy_threshold=None)
    plain = predict_image(decode_input(body, "image/png"), lenient)
    # Assert: both reasons, each with its numbers and setting; the class is still given
    assert flagged["uncertain"] is True
    low, unlike = flagged["uncertain_reasons"]
    assert low.startswith("low confidence: the most likely class has probability ")
    assert "under 1.00 (serving.min_confidence)" in low
    assert unlike.startswith("unlike the images the model was trained on: energy ")
    assert "(95% of them are)" in unlike
    assert flagged["class"] == plain["class"]
    assert plain["uncertain"] is False and plain["uncertain_reasons"] == []
