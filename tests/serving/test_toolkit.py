"""The artifact loads and answers under the real SageMaker PyTorch inference toolkit.

``tests/serving/toolkit_driver.py`` drives the toolkit's ``HandlerService`` with
TorchServe's request context in a fresh interpreter (see its docstring for what it
stands in for); this test packages, extracts, runs it and checks the replies.

The SageMaker PyTorch image has an older torch (2.6) than training (2.14). To check the
artifact under it too, point ``FRACTOFL_TOOLKIT_PYTHON`` at an interpreter with that
torch, torchvision, numpy, Pillow, cryptography, sagemaker-pytorch-inference and
torchserve installed (a 5 GB virtual environment, so not part of the default run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fractofl.core.images.imageio import read_grayscale
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.serving.contract import CUSTOM_ATTRIBUTES_HEADER, MODEL_INFO_TYPE
from fractofl.serving.inference import TRUSTED_KEY_ENV
from tests.serving.conftest import PublishedModel
from tests.serving.test_inference import expected_probabilities

DRIVER = Path(__file__).with_name("toolkit_driver.py")
TIMEOUT_S = 180
OTHER_PYTHON_ENV = "FRACTOFL_TOOLKIT_PYTHON"


@pytest.mark.parametrize(
    "python",
    [
        pytest.param(sys.executable, id="this-torch"),
        pytest.param(
            os.environ.get(OTHER_PYTHON_ENV, ""),
            id="other-torch",
            marks=pytest.mark.skipif(
                not os.environ.get(OTHER_PYTHON_ENV),
                reason=f"set {OTHER_PYTHON_ENV} to a python with the container's torch (2.6)",
            ),
        ),
    ],
)
def test_artifact_answers_under_the_sagemaker_toolkit(
    python: str,
    model_dir: Path,
    published: PublishedModel,
    images: dict[str, Path],
    tmp_path: Path,
) -> None:
    # Prepare: /opt/ml/model as SageMaker extracts it, the key in the environment
    opt_ml_model = Path(shutil.copytree(model_dir, tmp_path / "opt" / "ml" / "model"))
    text = tmp_path / "text.txt"
    text.write_text("hello")
    requests = [
        {"file": str(images["gray16.tif"]), "content_type": "image/tiff", "accept": "*/*"},
        {"file": str(images["rgba.png"]), "content_type": "image/png", "accept": ""},
        {"file": str(text), "content_type": "text/plain", "accept": "application/json"},
        {"file": str(images["truncated.jpg"]), "content_type": "image/jpeg", "accept": "*/*"},
        {"file": str(images["gray.npy"]), "content_type": "application/x-npy", "accept": "*/*"},
        {
            "file": str(images["gray.png"]),
            "content_type": "image/png",
            "accept": "*/*",
            "headers": {CUSTOM_ATTRIBUTES_HEADER: "heatmap=true"},
        },
        {"file": str(images["gray.png"]), "content_type": "image/png; heatmap=true", "accept": ""},
        {"file": str(text), "content_type": MODEL_INFO_TYPE, "accept": "application/json"},
    ]
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}
    env[TRUSTED_KEY_ENV] = published.public_key.read_text()
    # Execute
    result = subprocess.run(
        [python, str(DRIVER), str(opt_ml_model), str(tmp_path / "requests.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
    )
    # Assert: the artifact's own code served, without flwr or Hydra
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    code = opt_ml_model / "code"
    assert report["served_by"] == {
        "inference": str(code / "inference.py"),
        "fractofl.core.model.architectures": str(
            code / "fractofl" / "core" / "model" / "architectures.py"
        ),
        "fractofl.core.images.preprocessing": str(
            code / "fractofl" / "core" / "images" / "preprocessing.py"
        ),
        "ecdsa": str(code / "ecdsa" / "__init__.py"),  # the artifact's own, nothing installed
    }
    assert report["heavy_modules"] == []
    assert "signature verified: True" in result.stderr
    # ... good images answered as the training code would
    tiff, rgba, text_reply, truncated, npy, *heatmaps, info = report["replies"]
    for reply, image in ((tiff, "gray16.tif"), (rgba, "rgba.png"), (npy, "gray.png")):
        assert (reply["status"], reply["content_type"]) == (200, "application/json")
        answer = json.loads(reply["body"])
        expected = expected_probabilities(published, read_grayscale(images[image]))
        assert list(answer["probabilities"].values()) == pytest.approx(expected, abs=1e-5)
        assert answer["model_version"] == published.version
    # ... bad ones with the status inference.py raised and the contract's JSON error body,
    # not the toolkit's plain text with a traceback of container paths
    assert (text_reply["status"], text_reply["content_type"]) == (415, "application/json")
    assert json.loads(text_reply["body"])["error"].startswith(
        "content type 'text/plain' is not supported"
    )
    assert (truncated["status"], truncated["content_type"]) == (400, "application/json")
    assert list(json.loads(truncated["body"])) == ["error"]
    assert "cannot decode pixels" in json.loads(truncated["body"])["error"]
    assert all("Traceback" not in reply["body"] for reply in report["replies"])
    # ... and a heat map asked for by custom attribute (via the toolkit's context) or
    # content type parameter, the request image's size
    for reply in heatmaps:
        assert reply["status"] == 200
        heatmap = json.loads(reply["body"])["heatmap"]
        assert (heatmap["height"], heatmap["width"]) == read_grayscale(images["gray.png"]).shape
    # ... and the model described to a client that prepares large images itself
    assert info["status"] == 200
    described = json.loads(info["body"])
    assert described["model_version"] == published.version
    preprocessing = Preprocessing.from_dict(described["preprocessing"])
    assert preprocessing == published.checkpoint.preprocessing
