"""``fractofl predict``: a table for people, JSON for programs, exit 1 when a file fails."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.serving.conftest import API_KEY_ENV, PublishedModel, RunningEndpoint, fractofl_command


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
    assert header.split() == ["file", "class", "probability", "version"]
    assert len(rows) == 3
    for row, name in zip(rows[:2], ("gray.png", "gray16.tif"), strict=True):
        file, label, probability, version = row.split()
        assert (file, version) == (str(images[name]), published.version)
        assert label in published.checkpoint.classes
        assert 0.25 <= float(probability) <= 1.0
    assert rows[2].split() == [str(images["text.png"]), "ERROR", "-", "-"]
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
