"""``fractofl serve package``: a verified registry version -> SageMaker ``model.tar.gz``.

Layout of ``model-<vNNNNNN>.tar.gz`` (SageMaker extracts it to ``/opt/ml/model``)::

    model.safetensors         the weights (serving/safetensors_io.py)
    metadata.json             the registry version's signed metadata, byte for byte
    signature                 its detached Ed25519 signature
    serving.json              unsigned: weights file name, its SHA-256, the version
    code/inference.py         model_fn and transform_fn (the toolkit's handlers)
    code/fractofl/...         the fractofl modules inference.py imports (closure.py)
    code/ecdsa/, code/six.py  pure-Python signature verification (vendored.py), with
    code/licenses/...         their licences and code/VENDORED.txt naming their versions

No ``requirements.txt``: the container installs nothing at start.

The archive is deterministic (sorted entries, fixed times and owners), so packaging a
version twice gives the same bytes. :mod:`fractofl.serving.inference` states the trust
chain from the registry's signature to the served weights.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fractofl.core.config.run_config import ServingConfig
from fractofl.core.files.atomic import atomic_write
from fractofl.core.images.imageio import ImageBounds
from fractofl.core.trust import registry as reg
from fractofl.core.trust.registry import ModelRegistry, ModelVerificationError
from fractofl.serving import inference
from fractofl.serving.closure import import_closure
from fractofl.serving.errors import ArtifactError
from fractofl.serving.safetensors_io import to_safetensors
from fractofl.serving.vendored import vendored_files

WEIGHTS_FILE = "model.safetensors"
CODE_DIR = "code"
INFERENCE_FILE = "inference.py"
ROOT_INIT = '"""fractofl modules vendored for serving (see ../inference.py)."""\n'
_FILE_MODE = 0o644


@dataclass(frozen=True)
class Artifact:
    """A packaged model version."""

    path: Path
    version: str
    sha256: str
    size: int


def image_bounds_of(cfg: ServingConfig) -> ImageBounds:
    """The largest request image an artifact decodes (``serving.max_image_*``).

    Raises
    ------
    ArtifactError
        If a bound is not positive (or the aspect ratio is under 1).
    """
    try:
        return ImageBounds(cfg.max_image_pixels, cfg.max_image_side, cfg.max_aspect_ratio)
    except ValueError as exc:
        raise ArtifactError(f"serving.{exc}") from None


def artifact_name(version: str) -> str:
    """File name of a version's artifact: ``v000003`` -> ``model-v000003.tar.gz``."""
    return f"model-{version}.tar.gz"


def package_version(
    registry: ModelRegistry,
    version: int | str,
    trusted: Ed25519PublicKey,
    out_dir: Path,
    min_confidence: float = inference.DEFAULT_MIN_CONFIDENCE,
    image_bounds: ImageBounds = inference.DEFAULT_IMAGE_BOUNDS,
) -> Artifact:
    """Verify ``version`` against ``trusted`` and write its artifact into ``out_dir``
    (``min_confidence`` and ``image_bounds``: ``serving.min_confidence`` and
    ``serving.max_image_*``, kept in serving.json).

    Raises
    ------
    ModelVerificationError
        If the version is unsigned, signed by another key, or altered.
    ArtifactError
        If the served code would import something the container lacks.
    """
    folder = registry.folder(version)
    checkpoint, meta = registry.load_verified(folder.name, trusted)
    # Ship the very bytes that were verified: re-read, re-check, compare.
    payload = (folder / reg.METADATA_FILE).read_bytes()
    signature = (folder / reg.SIGNATURE_FILE).read_bytes()
    try:
        trusted.verify(signature, payload)
    except InvalidSignature:
        raise ModelVerificationError(
            f"{folder}: {reg.SIGNATURE_FILE} changed while it was packaged; package again"
        ) from None
    if payload != meta.to_json_bytes():
        raise ModelVerificationError(
            f"{folder}: {reg.METADATA_FILE} changed while it was packaged; package again"
        )
    files = artifact_files(
        checkpoint.state_dict, meta.name, payload, signature, min_confidence, image_bounds
    )
    path = atomic_write(Path(out_dir) / artifact_name(meta.name), lambda h: write_tar_gz(files, h))
    data = path.read_bytes()
    return Artifact(path, meta.name, hashlib.sha256(data).hexdigest(), len(data))


def artifact_files(
    state_dict: dict[str, torch.Tensor],
    version: str,
    metadata: bytes,
    signature: bytes,
    min_confidence: float = inference.DEFAULT_MIN_CONFIDENCE,
    image_bounds: ImageBounds = inference.DEFAULT_IMAGE_BOUNDS,
) -> dict[str, bytes]:
    """Every file of the artifact, by its path inside the archive."""
    weights = to_safetensors(state_dict, {"fractofl_version": version})
    serving = {
        "format": inference.SERVING_FORMAT,
        "version": version,
        "weights": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "min_confidence": min_confidence,
        inference.IMAGE_BOUNDS_KEY: asdict(image_bounds),
    }
    entry = Path(inference.__file__)
    files = {
        WEIGHTS_FILE: weights,
        inference.METADATA_FILE: metadata,
        inference.SIGNATURE_FILE: signature,
        inference.SERVING_FILE: json.dumps(serving, indent=2, sort_keys=True).encode() + b"\n",
        f"{CODE_DIR}/{INFERENCE_FILE}": entry.read_bytes(),
        f"{CODE_DIR}/fractofl/__init__.py": ROOT_INIT.encode(),
    }
    files |= {f"{CODE_DIR}/{path}": data for path, data in vendored_files().items()}
    for module in import_closure(entry):
        files[f"{CODE_DIR}/{module.archive_path}"] = module.source.read_bytes()
    return files


def write_tar_gz(files: dict[str, bytes], handle: BinaryIO) -> None:
    """Write ``files`` as a deterministic gzip-compressed tar archive to ``handle``."""
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = _FILE_MODE
            archive.addfile(info, io.BytesIO(files[name]))


def extract_artifact(path: Path, dest: Path) -> Path:
    """Unpack an artifact into ``dest`` as SageMaker does into ``/opt/ml/model``.

    Only plain files and folders inside ``dest`` are accepted.
    """
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if (
                    not (member.isfile() or member.isdir())
                    or member.name.startswith("/")
                    or (".." in parts)
                ):
                    raise ArtifactError(
                        f"{path}: entry {member.name!r} is not a plain file inside the archive; "
                        "not a fractofl artifact"
                    )
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links, odd modes
                archive.extractall(dest, filter="data")
            else:
                archive.extractall(dest)
    except (OSError, tarfile.TarError) as exc:
        raise ArtifactError(f"{path} is not a readable .tar.gz artifact: {exc}") from exc
    return dest
