"""Grad-CAM heat maps: where they point, their size, and every way to ask for one."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.client import EndpointClient
from fractofl.serving.contract import API_KEY_HEADER, HEATMAP_HEADER
from fractofl.serving.heatmap import grad_cam, target_layer
from fractofl.serving.inference import ImageRequest, decode_input, model_fn, predict_image
from tests.serving.conftest import RunningEndpoint, fractofl_command

SIDE = 32
SQUARE = 8
PREVIOUS_KEYS = [
    "class",
    "probabilities",
    "model_version",
    "classes",
    "uncertain",
    "uncertain_reasons",
    "provenance",
]


def _image_with_square(rng: np.random.Generator, top: int | None, left: int | None) -> np.ndarray:
    """Dim noise, plus a bright SQUARE x SQUARE square at (top, left) unless None."""
    image = rng.uniform(0.0, 0.3, (SIDE, SIDE)).astype(np.float32)
    if top is not None and left is not None:
        image[top : top + SQUARE, left : left + SQUARE] = rng.uniform(0.8, 1.0)
    return image


def _train_square_detector() -> nn.Module:
    """A tiny CNN trained (a few seconds) to say class 1 iff a bright square is present,
    anywhere: it can only learn to find the square."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    optimiser = torch.optim.Adam(network.parameters(), lr=0.01)
    for _ in range(150):
        labels = rng.integers(0, 2, 32)
        positions = rng.integers(0, SIDE - SQUARE + 1, (32, 2))
        batch = np.stack(
            [
                _image_with_square(rng, *(positions[i] if labels[i] else (None, None)))
                for i in range(32)
            ]
        )
        loss = nn.functional.cross_entropy(
            network(torch.from_numpy(batch)[:, None]), torch.from_numpy(labels)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return network.eval()


def test_the_map_highlights_the_square_that_drives_the_class() -> None:
    # Prepare: the square in the lower right quadrant of a new image
    network = _train_square_detector()
    image = _image_with_square(np.random.default_rng(99), top=20, left=22)
    inside = np.zeros(image.shape, dtype=bool)
    inside[20 : 20 + SQUARE, 22 : 22 + SQUARE] = True
    batch = torch.from_numpy(image)[None, None]
    # Execute
    with torch.inference_mode():
        predicted = int(network(batch).argmax())
    heatmap = grad_cam(network, batch, image.shape)
    # Assert
    assert predicted == 1
    assert heatmap[inside].mean() > 2 * heatmap[~inside].mean()
    assert inside[np.unravel_index(heatmap.argmax(), heatmap.shape)]


def test_the_map_has_the_request_size_and_leaves_no_hooks(model_dir: Path) -> None:
    # Prepare: a non-square image that the model's preprocessing resizes to 32 x 32
    served = model_fn(str(model_dir))
    image = np.random.default_rng(1).uniform(0, 1, (45, 70)).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    layer = target_layer(served.network, served.architecture)
    # Execute
    request = decode_input(buffer.getvalue(), "image/png; heatmap=true")
    answer = predict_image(request, served)
    plain = predict_image(decode_input(buffer.getvalue(), "image/png"), served)
    # Assert
    assert isinstance(request, ImageRequest)
    assert layer is [m for m in served.network.modules() if isinstance(m, nn.Conv2d)][-1]
    assert not layer._forward_hooks and not layer._backward_hooks
    assert all(p.grad is None for p in served.network.parameters())
    heat = answer["heatmap"]
    assert (heat["width"], heat["height"]) == (70, 45)
    with Image.open(io.BytesIO(base64.b64decode(heat["png_base64"]))) as png:
        assert (png.mode, png.size) == ("L", (70, 45))
        levels = np.asarray(png)
    assert levels.max() in (0, 255)  # normalised; all 0 where nothing raises the score
    assert list(plain) == PREVIOUS_KEYS
    assert list(answer) == [*PREVIOUS_KEYS, "heatmap"]
    assert {k: answer[k] for k in PREVIOUS_KEYS} == plain


def test_grad_cam_values_are_in_unit_range_at_the_output_size(model_dir: Path) -> None:
    # Prepare
    served = model_fn(str(model_dir))
    batch = served.preprocessing.to_tensor(np.random.default_rng(2).uniform(0, 1, (30, 90)))
    # Execute
    heatmap = grad_cam(served.network, batch[None], (30, 90), target_class=2)
    # Assert
    assert heatmap.dtype == np.float32 and heatmap.shape == (30, 90)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_header_and_content_type_parameter_over_http(
    endpoint: RunningEndpoint, images: dict[str, Path]
) -> None:
    # Prepare
    body = images["gray.png"].read_bytes()
    size = _png(images["gray.png"])
    headers = {"Content-Type": "image/png", API_KEY_HEADER: endpoint.api_key}
    asked = urllib.request.Request(
        f"{endpoint.url}/invocations", body, {**headers, HEATMAP_HEADER: "true"}
    )
    plain = urllib.request.Request(f"{endpoint.url}/invocations", body, headers)
    # Execute
    with urllib.request.urlopen(asked, timeout=60) as reply:
        by_header = json.loads(reply.read())
    with urllib.request.urlopen(plain, timeout=60) as reply:
        without = json.loads(reply.read())
    by_parameter = EndpointClient(endpoint.url, api_key=endpoint.api_key).predict(
        images["gray.png"], heatmap=True
    )
    # Assert
    assert (by_header["heatmap"]["width"], by_header["heatmap"]["height"]) == size
    png = base64.b64decode(by_header["heatmap"]["png_base64"])
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == size
    assert list(without) == PREVIOUS_KEYS
    assert by_parameter.heatmap is not None
    assert by_parameter.heatmap.shape == size[::-1]
    assert by_parameter.heatmap.min() >= 0.0 and by_parameter.heatmap.max() in (0.0, 1.0)


def test_boto3_custom_attribute(endpoint: RunningEndpoint, images: dict[str, Path]) -> None:
    # Prepare
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=endpoint.url,
        region_name="eu-central-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    # Execute
    response = runtime.invoke_endpoint(
        EndpointName=ServingConfig().endpoint_name,
        ContentType="image/png",
        Body=images["rgba.png"].read_bytes(),
        CustomAttributes=f"api-key={endpoint.api_key}; heatmap=true",
    )
    # Assert
    heatmap = json.loads(response["Body"].read())["heatmap"]
    assert (heatmap["width"], heatmap["height"]) == _png(images["rgba.png"])


def test_cli_writes_overlays(
    endpoint: RunningEndpoint, images: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare
    env = {**os.environ, "MY_KEY": endpoint.api_key}
    common = ["--endpoint", endpoint.url, "--api-key-env", "MY_KEY"]
    one, folder = tmp_path / "one.png", tmp_path / "maps"

    def predict(*args: str) -> subprocess.CompletedProcess[str]:
        command = fractofl_command("predict", *args, *common)
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    # Execute
    single = predict(str(images["gray.png"]), "--heatmap", str(one))
    several = predict(str(images["gray.png"]), str(images["gray16.tif"]), "--heatmap", str(folder))
    # Assert
    assert single.returncode == 0, single.stderr
    assert several.returncode == 0, several.stderr
    size = _png(images["gray.png"])
    for path in (one, folder / "gray_heatmap.png", folder / "gray16_heatmap.png"):
        with Image.open(path) as overlay:
            assert (overlay.mode, overlay.size) == ("RGB", size)


@pytest.mark.parametrize("value", ["false", "0", ""])
def test_other_option_values_ask_for_nothing(value: str, images: dict[str, Path]) -> None:
    # Execute
    request = decode_input(images["gray.png"].read_bytes(), f"image/png; heatmap={value}")
    # Assert
    assert isinstance(request, np.ndarray)
