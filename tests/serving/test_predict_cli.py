"""``fractofl predict``: a table for people, JSON for programs, exit 1 when a file fails."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.synth.micrograph import MicrographSpec, write_micrograph
from fractofl.core.trust.signing import fingerprint, load_public_key
from tests.serving.conftest import (
    API_KEY_ENV,
    ARCH_ARGS,
    IMAGE_SIZE,
    NO_RATE_LIMIT,
    PublishedModel,
    RunningEndpoint,
    fractofl_command,
    publish_model,
    start_endpoint,
    stop_endpoint,
)


def _predict(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fractofl_command("predict", *args),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=120,
    )


def test_table_over_http_with_a_failing_file(
    endpoint: RunningEndpoint, published: PublishedModel, images: dict[str, Path], tmp_path: Path
) -> None:
    # Execute
    result = _predict(
        str(images["gray.png"]),
        str(images["gray16.tif"]),
        str(images["text.png"]),
        "--endpoint",
        endpoint.url,
        "--api-key-env",
        "MY_KEY",
        env={"MY_KEY": endpoint.api_key},
        cwd=tmp_path,
    )
    # Assert
    assert result.returncode == 1
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["file", "class", "probability", "version", "note"]
    table, explained = rows[:3], rows[3:]
    for row, name in zip(table[:2], ("gray.png", "gray16.tif"), strict=True):
        file, label, probability, version, note = row.split()
        assert (file, version) == (str(images[name]), published.version)
        assert label in published.checkpoint.classes
        assert 0.25 <= float(probability) <= 1.0
        # an untrained model under serving.min_confidence (0.5): refer to an expert
        uncertain = float(probability) < 0.5
        assert note == ("UNCERTAIN" if uncertain else "-")
        said = f"{file}: UNCERTAIN, refer to an expert: low confidence"
        assert any(line.startswith(said) for line in explained) == uncertain
    assert table[2].split() == [str(images["text.png"]), "ERROR", "-", "-", "-"]
    # one provenance line for the version that answered
    signer = fingerprint(load_public_key(published.public_key))
    (origin,) = [line for line in explained if line.startswith("model ")]
    assert origin.startswith(f"model {published.version} (run ")
    assert origin.endswith(f"signed by {signer} (verified); members: not recorded")
    assert f"{images['text.png']}: " in result.stderr
    assert "answered 400: image/png request body: not a readable PNG" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_through_boto3_to_a_named_endpoint(
    endpoint: RunningEndpoint, published: PublishedModel, images: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare: the SageMaker endpoint name goes through boto3, pointed at the local endpoint
    aws = {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint.url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        API_KEY_ENV: endpoint.api_key,
    }
    # Execute
    result = _predict(
        str(images["rgba.png"]),
        "--endpoint",
        "fractofl",
        "--json",
        f"serving.api_key_env={API_KEY_ENV}",
        "serving.region=eu-central-1",
        env=aws,
        cwd=tmp_path,
    )
    # Assert
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["file"] == str(images["rgba.png"])
    assert answer["model_version"] == published.version
    assert answer["class"] in answer["probabilities"]
    assert answer["probability"] == answer["probabilities"][answer["class"]]


def test_a_physical_scale_model_gets_each_images_scale_from_its_metadata(
    tmp_path: Path,
) -> None:
    """A model of physical scale served locally: `fractofl predict` reads an FEI TIFF's
    pixel size and data bar and sends them; an image without metadata is refused with
    what to give, and answered once --pixel-size-um gives it."""
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=4, **ARCH_ARGS).eval()
    physical = replace(default_preprocessing("small_cnn", IMAGE_SIZE), pixel_size_um=0.2)
    published = publish_model(tmp_path / "published", model, physical)
    spec = MicrographSpec(width=256, height=192, texture_px=128)
    fei = write_micrograph(
        tmp_path / "fei.tif", "ductile", 2000.0, "fei", np.random.default_rng(1), spec
    )
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, tifffile.imread(fei.path))  # the same pixels, no metadata
    running = start_endpoint([*published.overrides(), NO_RATE_LIMIT], tmp_path, None)
    try:
        answered = _predict(
            str(fei.path), str(bare), "--endpoint", running.url, "--json", env={}, cwd=tmp_path
        )
        given = _predict(
            str(bare),
            "--endpoint",
            running.url,
            "--pixel-size-um",
            "0.248",
            "--map",
            str(tmp_path / "bare_map.png"),
            "--json",
            env={},
            cwd=tmp_path,
        )
    finally:
        stop_endpoint(running)
    first, second = json.loads(answered.stdout)
    assert first["model_version"] == published.version and "error" not in first
    assert "this model reads images at 0.2 um per pixel" in second["error"]
    assert "give --pixel-size-um UM" in second["error"]
    assert answered.returncode == 1 and given.returncode == 0, given.stderr
    (mapped,) = json.loads(given.stdout)
    assert mapped["class"] in published.checkpoint.classes
    # ... with its mechanism map drawn over it (a legend below) and written as JSON
    height, width = tifffile.imread(bare).shape
    with Image.open(mapped["map"]) as picture:
        assert picture.width == max(width, 260) and picture.height > height
    found = json.loads((tmp_path / "bare_map.json").read_text())
    assert found["fractions"] == mapped["map_fractions"]
    assert sum(found["fractions"].values()) == pytest.approx(1.0, abs=1e-3)
    assert found["dominant"] == mapped["map_dominant"] in published.checkpoint.classes
