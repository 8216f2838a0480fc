"""The AWS session that deployment uses, and AWS errors turned into messages a user can act on.

Credentials come from boto3's usual chain (environment, ``AWS_PROFILE``, instance role);
the region from ``serving.region``. botocore honours ``AWS_ENDPOINT_URL`` (and the
per-service ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_SAGEMAKER``), which is how the
tests point everything at a local AWS API server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from fractofl.serving.errors import ServingError

T = TypeVar("T")
ACCESS_DENIED = ("AccessDenied", "AccessDeniedException", "403")


class DeployError(ServingError):
    """A deployment step was refused or failed; the message says which setting, flag or
    AWS permission to change."""


def aws_session(region: str) -> boto3.Session:
    """A boto3 session for ``region`` (``serving.region``) with the default credential chain."""
    return boto3.Session(region_name=region)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a :class:`ClientError` (``""`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    """Whether a SageMaker describe call failed because the resource does not exist.

    SageMaker answers ``ValidationException: Could not find ...`` rather than a 404 code.
    """
    code = error_code(exc)
    return "NotFound" in code or (code == "ValidationException" and "Could not find" in str(exc))


def failure_hint(exc: ClientError | BotoCoreError) -> str:
    """What an AWS failure means for the user: no credentials, a permission the caller
    lacks, or AWS's own message."""
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if error_code(exc) in ACCESS_DENIED:
        return f"access denied; the caller's IAM policy must allow this call ({exc})"
    return str(exc)


def explain(exc: ClientError | BotoCoreError, doing: str) -> DeployError:
    """A :class:`DeployError` for an AWS failure while ``doing`` something, saying what
    to check (raise it ``from exc``)."""
    return DeployError(f"{doing} failed: {failure_hint(exc)}")


def aws_call(doing: str, call: Callable[[], T]) -> T:
    """Run one AWS call; its failure becomes a :class:`DeployError` saying what was done."""
    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, doing) from exc
