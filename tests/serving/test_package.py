"""``fractofl serve package``: the SageMaker artifact's layout, integrity and refusals."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import safetensors.torch
import torch

from fractofl.core.trust import registry as reg
from fractofl.core.trust.registry import ModelRegistry, ModelVerificationError
from fractofl.core.trust.signing import create_key_pair, load_public_key
from fractofl.serving import inference
from fractofl.serving.errors import ArtifactError
from fractofl.serving.package import Artifact, extract_artifact, package_version
from tests.conftest import run_fractofl
from tests.serving.conftest import PublishedModel, copy_registry, flip_a_byte

REPO = Path(__file__).resolve().parents[2]


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]


def test_artifact_holds_weights_signed_metadata_and_vendored_code(
    artifact: Artifact, published: PublishedModel
) -> None:
    # Execute
    files = _members(artifact.path)
    # Assert: the layout
    assert artifact.path.name == f"model-{published.version}.tar.gz"
    vendored = sorted(f for f in files if f.startswith(("code/ecdsa/", "code/licenses/")))
    assert sorted(f for f in files if f not in vendored) == [
        "code/VENDORED.txt",
        "code/fractofl/__init__.py",
        "code/fractofl/core/__init__.py",
        "code/fractofl/core/images/__init__.py",
        "code/fractofl/core/images/databar.py",
        "code/fractofl/core/images/imageio.py",
        "code/fractofl/core/images/physical_scale.py",
        "code/fractofl/core/images/preprocessing.py",
        "code/fractofl/core/images/scale.py",
        "code/fractofl/core/images/tiles.py",
        "code/fractofl/core/model/__init__.py",
        "code/fractofl/core/model/architectures.py",
        "code/fractofl/serving/__init__.py",
        "code/fractofl/serving/contract.py",
        "code/fractofl/serving/decoding.py",
        "code/fractofl/serving/heatmap.py",
        "code/fractofl/serving/mechanism_map.py",
        "code/fractofl/serving/request_errors.py",
        "code/fractofl/serving/safetensors_io.py",
        "code/inference.py",
        "code/six.py",
        "metadata.json",
        "model.safetensors",
        "serving.json",
        "signature",
    ]
    # ... the registry's signed bytes, unchanged
    version_dir = published.registry / published.version
    assert files["metadata.json"] == (version_dir / reg.METADATA_FILE).read_bytes()
    assert files["signature"] == (version_dir / reg.SIGNATURE_FILE).read_bytes()
    load_public_key(published.public_key).verify(files["signature"], files["metadata.json"])
    # ... weights that the official reader loads to the checkpoint's tensors, with their hash
    weights = safetensors.torch.load(files["model.safetensors"])
    assert weights.keys() == published.checkpoint.state_dict.keys()
    assert all(torch.equal(weights[k], v) for k, v in published.checkpoint.state_dict.items())
    serving = json.loads(files["serving.json"])
    assert serving == {
        "format": inference.SERVING_FORMAT,
        "version": published.version,
        "weights": "model.safetensors",
        "weights_sha256": hashlib.sha256(files["model.safetensors"]).hexdigest(),
        "min_confidence": inference.DEFAULT_MIN_CONFIDENCE,  # serving.min_confidence
        "image_bounds": {"max_pixels": 25_000_000, "max_side": 16384, "max_aspect_ratio": 16.0},
    }
    # ... and the very source files that trained the model, and no torch to reinstall
    assert files["code/inference.py"] == (REPO / "serving" / "inference.py").read_bytes()
    assert (
        files["code/fractofl/core/model/architectures.py"]
        == (REPO / "core" / "model" / "architectures.py").read_bytes()
    )
    # ... and, so that the container installs nothing (no requirements.txt), the pure-Python
    # signature check with its licences and versions
    assert "code/ecdsa/keys.py" in vendored and "code/ecdsa/test_pyecdsa.py" not in files
    assert {"code/licenses/ecdsa-LICENSE", "code/licenses/six-LICENSE"} <= set(vendored)
    manifest = files["code/VENDORED.txt"].decode().splitlines()
    assert [line.split("==")[0] for line in manifest if not line.startswith("#")] == [
        "ecdsa",
        "six",
    ]


def test_packaging_is_deterministic(
    artifact: Artifact, published: PublishedModel, tmp_path: Path
) -> None:
    # Execute
    again = package_version(
        ModelRegistry(published.registry),
        published.version,
        load_public_key(published.public_key),
        tmp_path,
    )
    # Assert
    assert again.sha256 == artifact.sha256
    assert again.path.read_bytes() == artifact.path.read_bytes()


def test_tampered_or_foreign_versions_are_not_packaged(
    published: PublishedModel, tmp_path: Path
) -> None:
    # Prepare: altered weights, and a key that did not sign the version
    tampered = copy_registry(published, tmp_path / "tampered")
    flip_a_byte(tampered / published.version / reg.MODEL_FILE)
    other_key = create_key_pair(tmp_path / "other.key", tmp_path / "other.pub", None)
    out = tmp_path / "artifacts"
    # Execute / Assert
    with pytest.raises(ModelVerificationError, match="weights changed after signing"):
        package_version(
            ModelRegistry(tampered), "latest", load_public_key(published.public_key), out
        )
    with pytest.raises(ModelVerificationError, match="signed by another key"):
        package_version(ModelRegistry(published.registry), "latest", other_key, out)
    assert not out.exists() or not any(out.iterdir())


def test_cli_packages_into_serving_artifacts(published: PublishedModel, tmp_path: Path) -> None:
    # Execute
    result = run_fractofl(
        "serve",
        "package",
        published.version,
        *published.overrides(),
        f"serving.artifacts={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    # Assert
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / f"model-{published.version}.tar.gz"
    assert f"packaged {published.version} (signature verified): {path}" in result.stdout
    assert hashlib.sha256(path.read_bytes()).hexdigest() in result.stdout


@pytest.mark.parametrize("kind", ["parent path", "symlink"])
def test_extraction_refuses_entries_outside_the_model_folder(tmp_path: Path, kind: str) -> None:
    # Prepare
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        entry = tarfile.TarInfo("../escaped.txt" if kind == "parent path" else "link")
        if kind == "symlink":
            entry.type, entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(entry, io.BytesIO(b""))
    # Execute / Assert
    with pytest.raises(ArtifactError, match="is not a plain file inside the archive"):
        extract_artifact(path, tmp_path / "model")
    assert not (tmp_path / "escaped.txt").exists()
