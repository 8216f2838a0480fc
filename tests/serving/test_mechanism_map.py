"""The mechanism map: a physical-scale model's tiles over a whole image whose left half
is one class and right half another."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.learning.training import train
from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.serving.contract import map_in_headers
from fractofl.serving.inference import ServedModel, decode_input, predict_image, transform_fn
from fractofl.serving.mechanism_map import map_positions, mechanism_map, tile_starts
from fractofl.serving.request_errors import ImageScaleError
from tests.serving.test_local_endpoint import call

TILE = 32
PIXEL_UM = 0.1
CLASSES = ("bright", "dark")
LEVELS = (0.7, 0.3)  # each class's mean gray level
PREP = Preprocessing(TILE, pixel_size_um=PIXEL_UM)
WIDTH, SURFACE, BAR = 320, 224, 16  # the request image: 320 x 240 with a 16-row data bar
FRACTION_TOLERANCE = 0.1
"""Tiles across the boundary belong to either side: each half's area fraction within
0.1 of 0.5 (the map has 19 tile columns here; 2 straddle the middle)."""


def noise(rng: np.random.Generator, level: float, shape: tuple[int, ...]) -> np.ndarray:
    return np.clip(rng.normal(level, 0.08, shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def served() -> ServedModel:
    """A small CNN of physical scale trained, for a few seconds, to tell the two
    classes' tiles apart."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network = build_model("small_cnn", num_classes=2, width=8)
    batches = []
    for _ in range(40):
        labels = rng.integers(0, 2, 64)
        tiles = np.stack([noise(rng, LEVELS[label], (TILE, TILE)) for label in labels])
        batches.append((PREP.normalise(tiles), torch.tensor(labels)))
    result = train(network, batches, 2, 0.05, 0.9, 0.0, torch.device("cpu"))
    assert result.accuracy > 0.95, "precondition: the model tells the classes apart"
    return ServedModel(network.eval(), PREP, CLASSES, "v1", torch.device("cpu"), False, "small_cnn")


def half_and_half(rng: np.random.Generator) -> bytes:
    """A 16-bit TIFF: the left half bright, the right half dark, a white data bar."""
    image = np.concatenate(
        [
            noise(rng, LEVELS[0], (SURFACE, WIDTH // 2)),
            noise(rng, LEVELS[1], (SURFACE, WIDTH // 2)),
        ],
        axis=1,
    )
    image = np.concatenate([image, np.ones((BAR, WIDTH), np.float32)])
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_the_map_puts_each_class_on_its_half(served: ServedModel) -> None:
    # Prepare
    body = half_and_half(np.random.default_rng(1))
    options = f"pixel_size_um={PIXEL_UM}; databar_px={BAR}; map=true"
    # Execute
    answer = predict_image(decode_input(body, f"image/tiff; {options}"), served)
    # Assert: tiles half a tile apart over the surface, none in the data bar
    found = answer["map"]
    tops, lefts = map_positions(SURFACE, WIDTH, TILE, 1024)
    assert (found["rows"], found["cols"]) == (len(tops), len(lefts))
    assert found["tops"] == tops and found["lefts"] == lefts and found["tile_px"] == TILE
    assert max(found["tops"]) + found["tile_px"] <= SURFACE
    # ... each tile wholly on one half says that half's class
    probabilities = np.array(found["probabilities"])
    assert probabilities.shape == (len(tops), len(lefts), 2)
    assert np.allclose(probabilities.sum(axis=-1), 1, atol=1e-3)
    for j, left in enumerate(lefts):
        if left + TILE <= WIDTH // 2:
            assert (probabilities[:, j].argmax(axis=-1) == 0).all()
        elif left >= WIDTH // 2:
            assert (probabilities[:, j].argmax(axis=-1) == 1).all()
    # ... and the area fractions are each half's
    assert set(found["fractions"]) == set(CLASSES)
    for name in CLASSES:
        assert found["fractions"][name] == pytest.approx(0.5, abs=FRACTION_TOLERANCE)
    assert found["dominant"] in CLASSES
    assert found["classes"] == list(CLASSES)


def test_the_map_is_in_the_request_images_pixels(served: ServedModel) -> None:
    # Prepare: the same surface said to be twice as fine: the model sees it halved
    body = half_and_half(np.random.default_rng(2))
    options = f"pixel_size_um={PIXEL_UM / 2}; databar_px={BAR}; map=true"
    # Execute
    found = predict_image(decode_input(body, f"image/tiff; {options}"), served)["map"]
    # Assert: tiles twice as large and twice as far apart in the request's pixels
    tops, lefts = map_positions(SURFACE // 2, WIDTH // 2, TILE, 1024)
    assert found["tile_px"] == 2 * TILE
    assert found["tops"] == [2 * t for t in tops] and found["lefts"] == [2 * le for le in lefts]
    for name in CLASSES:
        assert found["fractions"][name] == pytest.approx(0.5, abs=2 * FRACTION_TOLERANCE)


def test_a_large_image_gets_fewer_tiles_further_apart_covering_it_all(
    served: ServedModel,
) -> None:
    # Prepare
    prepared = noise(np.random.default_rng(3), 0.5, (300, 500))
    # Execute
    found = mechanism_map(
        served.network, PREP.normalise, prepared, TILE, 1.0, torch.device("cpu"), max_tiles=24
    )
    # Assert
    assert len(found.tops) * len(found.lefts) <= 24
    assert (found.tops[0], found.tops[-1]) == (0, 300 - TILE)
    assert (found.lefts[0], found.lefts[-1]) == (0, 500 - TILE)
    assert tile_starts(TILE, TILE, 10) == [0]  # an image of exactly one tile
    assert found.fractions.sum() == pytest.approx(1.0)


def test_a_model_without_physical_scale_refuses_a_map_with_the_reason(tmp_path: Path) -> None:
    # Prepare
    network = build_model("small_cnn", num_classes=2, width=8).eval()
    whole = ServedModel(
        network, default_preprocessing("small_cnn", TILE), CLASSES, "v7", torch.device("cpu"), False
    )
    body = half_and_half(np.random.default_rng(4))
    # Execute / Assert
    with pytest.raises(ImageScaleError, match="a mechanism map needs a model of physical scale"):
        predict_image(decode_input(body, "image/tiff; map=true"), whole)
    assert "map" not in predict_image(decode_input(body, "image/tiff"), whole)


def test_map_asked_for_by_header_or_custom_attribute() -> None:
    # Execute / Assert
    assert map_in_headers({"X-Fractofl-Map": "true"})
    assert map_in_headers({"x-amzn-sagemaker-custom-attributes": "trace=1; map=yes"})
    assert not map_in_headers({"X-Fractofl-Heatmap": "true"})


def test_the_endpoint_answers_a_map_request_on_a_whole_image_model_with_400(
    endpoint: object, images: dict[str, Path]
) -> None:
    # Execute: the session endpoint serves a whole-image model; the header asks for a map
    status, answer, _ = call(
        endpoint,  # type: ignore[arg-type]
        images["gray.png"].read_bytes(),
        headers={"X-Fractofl-Map": "true"},
    )
    # Assert
    assert status == 400
    assert "a mechanism map needs a model of physical scale" in answer["error"]


def test_transform_fn_carries_the_map_as_json(served: ServedModel) -> None:
    # Execute
    body = half_and_half(np.random.default_rng(5))
    payload, kind = transform_fn(
        served, body, f"image/tiff; pixel_size_um={PIXEL_UM}; databar_px={BAR}; map=true", None
    )
    # Assert
    assert kind == "application/json"
    assert json.loads(payload)["map"]["dominant"] in CLASSES
