"""Upload a packaged model (``model.tar.gz``) to S3 for SageMaker to download.

boto3's managed transfer sends files above ``serving.multipart_threshold_mb`` in parts,
in parallel, and retries failed parts; with ``serving.kms_key_id`` set the object is
encrypted with that KMS key (SSE-KMS).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.aws import ACCESS_DENIED, DeployError, error_code, explain

MIB = 1024 * 1024
ARTIFACT_NAME = "model.tar.gz"

ByteProgress = Callable[[int, int], None]
"""Called with (bytes uploaded so far, file size)."""


def artifact_key(prefix: str, version: str) -> str:
    """S3 key of a version's artifact: ``{prefix}/{version}/model.tar.gz``."""
    return "/".join(part for part in (prefix.strip("/"), version, ARTIFACT_NAME) if part)


def upload_artifact(
    serving: ServingConfig,
    artifact: Path,
    version: str,
    session: boto3.Session,
    progress: ByteProgress | None = None,
) -> str:
    """Upload ``artifact`` to ``s3://{bucket}/{prefix}/{version}/model.tar.gz``.

    Parameters
    ----------
    serving
        ``bucket``, ``prefix``, ``kms_key_id`` and ``multipart_threshold_mb`` are used.
    artifact
        The local ``model.tar.gz``.
    version
        Version folder name, e.g. ``v000003``.
    session
        The boto3 session (its region and credentials).
    progress
        Called with (bytes uploaded, total bytes) as parts complete.

    Returns
    -------
    str
        The object's S3 URI.

    Raises
    ------
    DeployError
        The file is missing, the bucket does not exist, or S3 or KMS refused the upload.
    """
    if not artifact.is_file():
        raise DeployError(f"artifact {artifact} does not exist or is not a file")
    key = artifact_key(serving.prefix, version)
    uri = f"s3://{serving.bucket}/{key}"
    extra: dict[str, Any] = {}
    if serving.kms_key_id:
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": serving.kms_key_id}
    config = TransferConfig(multipart_threshold=serving.multipart_threshold_mb * MIB)
    counter = _ByteCounter(artifact.stat().st_size, progress) if progress else None
    try:
        session.client("s3").upload_file(
            str(artifact), serving.bucket, key, ExtraArgs=extra, Callback=counter, Config=config
        )
    except S3UploadFailedError as exc:
        # boto3 re-raises the ClientError of the failed part as its own type.
        cause = exc.__context__ if isinstance(exc.__context__, ClientError) else None
        raise _upload_error(cause, serving, uri, str(exc)) from exc
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, f"uploading {artifact} to {uri}") from exc
    return uri


def _upload_error(
    cause: ClientError | None, serving: ServingConfig, uri: str, message: str
) -> DeployError:
    code = error_code(cause) if cause is not None else ""
    if code == "NoSuchBucket":
        return DeployError(
            f"S3 bucket {serving.bucket!r} (serving.bucket) does not exist; create it in "
            f"serving.region={serving.region} or set serving.bucket to an existing bucket"
        )
    if code in ACCESS_DENIED:
        kms = f" and kms:GenerateDataKey on {serving.kms_key_id}" if serving.kms_key_id else ""
        return DeployError(
            f"access denied writing {uri}: the caller needs s3:PutObject on bucket "
            f"{serving.bucket!r}{kms}"
        )
    if code.startswith("KMS") or "KMS" in message:
        return DeployError(
            f"KMS refused serving.kms_key_id={serving.kms_key_id!r} while writing {uri}: {message}"
        )
    return DeployError(f"uploading to {uri} failed: {message}")


class _ByteCounter:
    """Sums boto3's per-chunk byte counts (sent from its worker threads) into a total."""

    def __init__(self, total: int, progress: ByteProgress) -> None:
        self.total = total
        self.done = 0
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self, chunk: int) -> None:
        with self._lock:
            self.done += chunk
            self._progress(self.done, self.total)
