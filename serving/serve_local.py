"""``fractofl serve local``: verify a registry version, package it, serve its artifact.

The endpoint runs the artifact it has just built from the verified version, through
the artifact's own ``code/inference.py`` (as SageMaker would), with the trusted key
placed next to the model so that ``model_fn`` verifies the signature too.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fractofl.core.images.imageio import ImageBounds
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import public_pem
from fractofl.serving.artifact_loader import load_handlers
from fractofl.serving.errors import EndpointError
from fractofl.serving.inference import (
    DEFAULT_IMAGE_BOUNDS,
    DEFAULT_MIN_CONFIDENCE,
    TRUSTED_KEY_FILE,
)
from fractofl.serving.local_endpoint import EndpointSettings, LocalEndpoint, inference_worker
from fractofl.serving.package import extract_artifact, package_version

MODEL_DIR = "model"


def prepare_model_dir(
    registry: ModelRegistry,
    version: int | str,
    trusted: Ed25519PublicKey,
    workdir: Path,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    image_bounds: ImageBounds = DEFAULT_IMAGE_BOUNDS,
) -> Path:
    """Package ``version`` (verified) into ``workdir`` and extract it as ``/opt/ml/model``."""
    artifact = package_version(registry, version, trusted, workdir, min_confidence, image_bounds)
    model_dir = extract_artifact(artifact.path, workdir / MODEL_DIR)
    (model_dir / TRUSTED_KEY_FILE).write_text(public_pem(trusted))
    return model_dir


def start_local_endpoint(
    registry: ModelRegistry,
    version: int | str,
    trusted: Ed25519PublicKey,
    settings: EndpointSettings,
    workdir: Path,
) -> LocalEndpoint:
    """A bound, not yet serving, local endpoint for ``version``; refuses an unverified model.

    Raises
    ------
    ModelVerificationError
        If the version is unsigned, signed by another key, or altered.
    EndpointError
        If the address cannot be bound, or the model was not verified on load.
    """
    model_dir = prepare_model_dir(
        registry, version, trusted, workdir, settings.min_confidence, settings.image_bounds
    )
    worker = inference_worker()  # model_fn runs on the thread that will answer requests
    try:
        handlers = worker.submit(load_handlers, model_dir).result()
        if not getattr(handlers.model, "signature_verified", False):
            raise EndpointError(f"{handlers.version}: model_fn did not verify the signature")
        return LocalEndpoint(handlers, settings, worker)
    except BaseException:
        worker.shutdown(wait=False)
        raise
