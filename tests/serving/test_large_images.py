"""Images over an endpoint's request limit: the client brings them to the model's scale
(or sends them as tiles) and gets the answer the whole image gets.

Each test compares the client's answer through a real local endpoint with a small
``serving.max_payload_mb`` against the answer of one with a large limit, which takes the
original image whole.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from PIL import Image

from fractofl.cli.main import main
from fractofl.core.images.scale import SemScale
from fractofl.serving.async_invocation import AsyncSettings
from fractofl.serving.client import EndpointClient, Prediction
from fractofl.serving.deploy import deploy
from fractofl.serving.errors import EndpointError
from fractofl.serving.mechanism_map import tile_starts
from fractofl.serving.request_preparation import (
    Piece,
    join_maps,
    map_pieces,
    npy_size,
)
from tests.serving.conftest import bright_or_dark, extracted_model, publish_bright_dark_model
from tests.serving.moto_aws import (
    ASYNC_CONTAINERS,
    BUCKET,
    REGION,
    serving_settings,
    small_artifact,
)
from tests.serving.test_endpoint_hardening import serving

TILE, MODEL_UM = 32, 0.1
IMAGE_UM = MODEL_UM / 4  # the micrograph is 4x finer than the model's scale
WIDTH, SURFACE, BAR = 1280, 920, 40  # a 1280 x 960 16-bit TIFF with a 40-row data bar
PREPARED_MIB = 0.5  # the limit under which the image at the model's scale (294 KB) fits
TILED_MIB = 0.1  # the limit under which only tiles fit
PROBABILITY_TOLERANCE = 1e-5
MAP_TOLERANCE = 2e-4  # the endpoint rounds map probabilities to 4 decimals
SCALE = SemScale(IMAGE_UM, databar_px=BAR, source="test")


@pytest.fixture(scope="module")
def physical_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extracted artifact of a physical-scale model that calls bright tiles fatigue
    and dark ones ductile."""
    root = tmp_path_factory.mktemp("large-images")
    published = publish_bright_dark_model(root, TILE, MODEL_UM)
    return extracted_model(published, root / "out")


@pytest.fixture(scope="module")
def micrograph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-bit TIFF of 2.4 MB: bright on the left third, dark elsewhere, a white data bar."""
    rng = np.random.default_rng(1)
    coarse = (SURFACE // 4, WIDTH // 4)  # the texture at the model's scale, 4x finer here
    left = WIDTH // 12
    surface = (
        np.concatenate(
            [
                bright_or_dark(rng, 0, (coarse[0], left)),
                bright_or_dark(rng, 1, (coarse[0], coarse[1] - left)),
            ],
            axis=1,
        )
        .repeat(4, axis=0)
        .repeat(4, axis=1)
    )
    image = np.concatenate([surface, np.ones((BAR, WIDTH), np.float32)])
    path = tmp_path_factory.mktemp("micrograph") / "surface.tif"
    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(path, format="TIFF")
    return path


@pytest.fixture(scope="module")
def whole_answer(physical_model: Path, micrograph: Path) -> Iterator[Prediction]:
    """The answer (with map and heat map) of an endpoint that takes the image whole."""
    with serving(physical_model, max_payload_mb=8) as (host, port):
        client = EndpointClient(f"http://{host}:{port}")
        yield client.predict(micrograph, scale=SCALE, mechanism_map=True, heatmap=True)


def assert_same_answer_and_map(answer: Prediction, whole: Prediction) -> None:
    """``answer`` is ``whole``'s: class, probabilities, uncertainty, provenance and map
    (tiles at the same places of the original image)."""
    assert answer.label == whole.label
    for name, probability in whole.probabilities.items():
        assert answer.probabilities[name] == pytest.approx(probability, abs=PROBABILITY_TOLERANCE)
    assert (answer.uncertain, answer.provenance) == (whole.uncertain, whole.provenance)
    found, expected = answer.mechanism_map, whole.mechanism_map
    assert found is not None and expected is not None
    for key in ("rows", "cols", "fractions", "dominant"):
        assert found[key] == expected[key]
    for key in ("tops", "lefts", "tile_px"):
        assert found[key] == pytest.approx(expected[key], abs=0.1)
    assert np.allclose(found["probabilities"], expected["probabilities"], atol=MAP_TOLERANCE)


def test_an_image_over_the_limit_goes_at_the_models_scale_with_the_same_answer(
    physical_model: Path, micrograph: Path, whole_answer: Prediction
) -> None:
    # Prepare: the TIFF is 2.4 MB, the endpoint takes 0.5 MiB
    assert micrograph.stat().st_size > PREPARED_MIB * 2**20
    with serving(physical_model, max_payload_mb=PREPARED_MIB) as (host, port):
        client = EndpointClient(f"http://{host}:{port}")
        # Execute
        answer = client.predict(micrograph, scale=SCALE, mechanism_map=True, heatmap=True)
    # Assert: the whole image's answer, map and heat map, in the original's pixels
    assert_same_answer_and_map(answer, whole_answer)
    assert answer.heatmap is not None and answer.heatmap.shape == (SURFACE + BAR, WIDTH)
    assert not answer.heatmap[SURFACE:].any(), "nothing on the data bar"
    # ... and it says what it did
    assert "over the endpoint's 0.5 MiB" in answer.preparation
    assert "1280x960 px -> 320x230 px at 0.1 um/px" in answer.preparation
    assert whole_answer.preparation == ""


def test_an_image_still_over_the_limit_goes_as_tiles_with_the_same_answer_and_map(
    physical_model: Path, micrograph: Path, whole_answer: Prediction
) -> None:
    # Prepare: 0.1 MiB holds neither the image (2.4 MB) nor its prepared pixels (294 KB)
    with serving(physical_model, max_payload_mb=TILED_MIB) as (host, port):
        client = EndpointClient(f"http://{host}:{port}")
        # Execute
        answer = client.predict(micrograph, scale=SCALE, mechanism_map=True, heatmap=True)
    # Assert: the whole image's answer (its evaluation tiles) and its whole map (pieces)
    assert_same_answer_and_map(answer, whole_answer)
    assert answer.mechanism_map is not None
    assert answer.mechanism_map["fractions"]["fatigue"] == pytest.approx(1 / 3, abs=0.1)
    # ... with no heat map, and it says so
    assert answer.heatmap is None
    assert "answered from its 3x3 evaluation tiles" in answer.preparation
    assert "map joined from 6 pieces" in answer.preparation
    assert "no heat map at this size" in answer.preparation


def test_a_whole_image_model_gets_its_input_size_and_the_same_answer(
    model_dir: Path, tmp_path: Path
) -> None:
    # Prepare: a 600 x 400 16-bit PNG of noise (about 480 KB) and an endpoint taking 0.1 MiB
    rng = np.random.default_rng(2)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 65536, (400, 600), dtype=np.uint16)).save(path)
    with serving(model_dir, max_payload_mb=1) as (host, port):
        whole = EndpointClient(f"http://{host}:{port}").predict(path, heatmap=True)
    with serving(model_dir, max_payload_mb=TILED_MIB) as (host, port):
        # Execute
        answer = EndpointClient(f"http://{host}:{port}").predict(path, heatmap=True)
    # Assert
    assert answer.probabilities == pytest.approx(whole.probabilities, abs=PROBABILITY_TOLERANCE)
    assert answer.heatmap is not None and answer.heatmap.shape == (400, 600)
    assert "600x400 px -> 32x32 px (the model's input)" in answer.preparation


def test_what_cannot_be_prepared_is_said(physical_model: Path, micrograph: Path) -> None:
    with serving(physical_model, max_payload_mb=TILED_MIB) as (host, port):
        url = f"http://{host}:{port}"
        # A physical-scale model, an image over the limit, and no pixel size
        with pytest.raises(EndpointError, match=r"pixel size is unknown.*--pixel-size-um"):
            EndpointClient(url).predict(micrograph)
        # A map that would take more requests than allowed
        with pytest.raises(EndpointError, match=r"6 requests \(max_pieces=2\).*--async"):
            EndpointClient(url, max_pieces=2).predict(micrograph, scale=SCALE, mechanism_map=True)
        # An image that is not one
        with pytest.raises(EndpointError, match=r"image/tiff"):
            EndpointClient(url).predict(b"II*\x00" + bytes(200_000), "image/tiff", scale=SCALE)


@pytest.mark.parametrize(("height", "width"), [(230, 320), (32, 32), (33, 700), (1000, 1000)])
def test_map_pieces_hold_every_tile_of_the_whole_grid_within_the_limit(
    height: int, width: int
) -> None:
    # Prepare
    limit = npy_size(160, 160)
    # Execute
    pieces = map_pieces(height, width, TILE, limit)
    # Assert: each piece fits, and their tiles (as the endpoint lays them out) are the grid
    assert all(npy_size(p.height, p.width) <= limit for p in pieces)
    tiles = {
        (p.top + top, p.left + left)
        for p in pieces
        for top in tile_starts(p.height, TILE, 32)
        for left in tile_starts(p.width, TILE, 32)
    }
    whole = {
        (top, left)
        for top in tile_starts(height, TILE, height + 2)
        for left in tile_starts(width, TILE, width + 2)
    }
    assert tiles == whole


def test_pieces_maps_join_into_one_grid_and_a_misfit_is_refused() -> None:
    # Prepare: two pieces side by side, one class each
    classes = ["a", "b"]

    def piece_map(cls: int, cols: int) -> dict[str, object]:
        probabilities = [[[1.0 - cls, float(cls)] for _ in range(cols)]]
        return {
            "classes": classes,
            "tile_px": TILE,
            "tops": [0.0],
            "lefts": [16.0 * c for c in range(cols)],
            "probabilities": probabilities,
        }

    pieces = [Piece(0, 0, TILE, 64), Piece(0, 32, TILE, 64)]
    # Execute
    joined = join_maps(pieces, [piece_map(0, 3), piece_map(1, 3)])
    # Assert: the shared tile at 32 is counted once, from the first piece
    assert joined["lefts"] == [0.0, 16.0, 32.0, 48.0, 64.0]
    assert joined["fractions"] == {"a": 0.6, "b": 0.4}
    assert joined["dominant"] == "a"
    with pytest.raises(EndpointError, match="do not make one grid"):
        join_maps([Piece(0, 0, TILE, 64), Piece(16, 8, TILE, 64)], [piece_map(0, 3)] * 2)


# ---- SageMaker Asynchronous Inference (moto, with SageMaker's async work done by moto_aws) ----

ASYNC_ENDPOINT = "fractofl-async"


def _deploy_async(aws: boto3.Session, tmp_path: Path, container: str, **settings: Any) -> None:
    """An asynchronous endpoint on moto whose requests ``container`` answers."""
    deploy(
        serving_settings(**settings),
        small_artifact(tmp_path),
        "v000001",
        ASYNC_ENDPOINT,
        asynchronous=True,
        poll_s=0.01,
        report=lambda line: None,
    )
    ASYNC_CONTAINERS[ASYNC_ENDPOINT] = container


def _async_client(timeout_s: float = 60.0) -> EndpointClient:
    settings = AsyncSettings(f"s3://{BUCKET}/requests", timeout_s=timeout_s, poll_s=0.05)
    return EndpointClient(ASYNC_ENDPOINT, region=REGION, asynchronous=settings)


def _objects(aws: boto3.Session, bucket: str = BUCKET) -> list[str]:
    return [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_an_asynchronous_endpoint_maps_the_full_image_through_s3(
    aws: boto3.Session,
    tmp_path: Path,
    physical_model: Path,
    micrograph: Path,
    whole_answer: Prediction,
) -> None:
    # Prepare: the container takes only 0.1 MiB in real time; asynchronous requests go whole
    with serving(physical_model, max_payload_mb=8) as (host, port):
        _deploy_async(aws, tmp_path, f"http://{host}:{port}")
        uploaded = set(_objects(aws))
        # Execute
        answer = _async_client().predict(micrograph, scale=SCALE, mechanism_map=True)
    # Assert: the whole image's answer and map, sent as it is
    assert answer.preparation == ""
    assert answer.probabilities == pytest.approx(whole_answer.probabilities, abs=1e-6)
    assert answer.mechanism_map == whole_answer.mechanism_map
    # ... and neither the image nor the answer stays in the bucket
    assert set(_objects(aws)) == uploaded


def test_an_asynchronous_refusal_and_an_answer_never_written_are_named(
    aws: boto3.Session, tmp_path: Path, physical_model: Path
) -> None:
    # Prepare: answers and errors go to a bucket that is removed after the first request
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="answers", CreateBucketConfiguration={"LocationConstraint": REGION})
    with serving(physical_model, max_payload_mb=8) as (host, port):
        _deploy_async(
            aws,
            tmp_path,
            f"http://{host}:{port}",
            async_output_path="s3://answers/out",
            async_failure_path="s3://answers/failed",
        )
        # Execute / Assert: the container refuses a request: its reason comes back
        with pytest.raises(
            EndpointError, match=r"asynchronous endpoint 'fractofl-async' failed: .*PNG"
        ):
            _async_client().predict(b"not a png", "image/png")
        # ... the answers' bucket is gone: said at once
        s3.delete_bucket(Bucket="answers")
        with pytest.raises(EndpointError, match=r"s3://answers/out/.* does not exist, so"):
            _async_client().predict(_small_png(), "image/png", scale=SemScale(MODEL_UM))
    assert not [k for k in _objects(aws) if k.startswith("requests/")], "request images deleted"


def test_an_asynchronous_answer_that_never_comes_is_waited_for_until_the_timeout(
    aws: boto3.Session, tmp_path: Path
) -> None:
    # Prepare: a container that takes requests and never answers
    with socket.create_server(("127.0.0.1", 0)) as silent:
        host, port = silent.getsockname()[:2]
        _deploy_async(aws, tmp_path, f"http://{host}:{port}")
        # Execute / Assert
        with pytest.raises(EndpointError, match=r"no answer .* after 1 s .*s3:PutObject"):
            _async_client(timeout_s=1).predict(_small_png(), "image/png")
    assert _objects(aws) == ["fractofl/models/v000001/model.tar.gz"]


def _small_png() -> bytes:
    image = io.BytesIO()
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(image, format="PNG")
    return image.getvalue()


def test_predict_says_how_it_sent_an_image_over_the_limit_and_maps_it_asynchronously(
    aws: boto3.Session,
    tmp_path: Path,
    physical_model: Path,
    micrograph: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare
    scale = ["--pixel-size-um", str(IMAGE_UM)]
    settings = [f"serving.bucket={BUCKET}", f"serving.region={REGION}"]
    with (
        serving(physical_model, max_payload_mb=PREPARED_MIB) as (host, port),
        serving(physical_model, max_payload_mb=8) as container,  # TS_MAX_REQUEST_SIZE's part
    ):
        _deploy_async(aws, tmp_path, "http://{}:{}".format(*container))
        # Execute: real time, over the limit
        assert (
            main(["predict", str(micrograph), "--endpoint", f"http://{host}:{port}", *scale]) == 0
        )
        realtime = capsys.readouterr().out
        # Execute: asynchronous, the whole image with its map
        out = tmp_path / "map.png"
        command = ["predict", str(micrograph), "--endpoint", ASYNC_ENDPOINT, "--async"]
        assert main([*command, *scale, "--map", str(out), *settings]) == 0
        asynchronous = capsys.readouterr().out
    # Assert
    assert f"{micrograph}: {micrograph} is 2.3 MiB, over the endpoint's 0.5 MiB" in realtime
    assert "sent at the model's scale (1280x960 px -> 320x230 px at 0.1 um/px" in realtime
    assert "over the endpoint" not in asynchronous
    assert f"{micrograph}: map: ductile dominant" in asynchronous
    assert out.is_file() and out.with_suffix(".json").is_file()
    with Image.open(out) as picture:
        assert picture.width == WIDTH
