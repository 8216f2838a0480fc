"""Deploy a packaged model version to a SageMaker real-time endpoint, or move one to it.

``deploy`` uploads the artifact, creates a model and an endpoint configuration (see
:mod:`fractofl.serving.sagemaker_resources`) and then creates the endpoint, or with
``update=True`` points the live endpoint at the new configuration (UpdateEndpoint: SageMaker
brings the new fleet up before it drains the old one, so there is no downtime). Both wait
for InService. Settings come from ``serving`` (``conf/serving/``) and are checked before
any AWS call. :mod:`fractofl.serving.undeploy` deletes what this creates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from sagemaker.core.resources import Endpoint

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving import async_invocation, autoscaling
from fractofl.serving import sagemaker_resources as resources
from fractofl.serving.aws import (
    DeployError,
    aws_call,
    aws_session,
    error_code,
    explain,
    is_not_found,
)
from fractofl.serving.s3_upload import ByteProgress, upload_artifact

log = logging.getLogger("fractofl")

POLL_SECONDS = 15.0  # between DescribeEndpoint calls while waiting (creation takes minutes)
IN_SERVICE = "InService"
FAILED_STATES = ("Failed", "UpdateRollbackFailed")
S3_MIN_PART_MB = 5  # S3's smallest multipart part


@dataclass(frozen=True)
class Deployment:
    """What one deploy created and where the endpoint stands."""

    endpoint: str
    endpoint_config: str
    model: str
    model_data_url: str
    image: str
    status: str


def check_settings(serving: ServingConfig, endpoint: str, asynchronous: bool = False) -> str:
    """Check the settings a deployment needs (``asynchronous``: an Asynchronous Inference
    endpoint's too), before any AWS call; returns the image URI.

    Raises :class:`DeployError` naming the setting at fault.
    """
    check_endpoint_name(endpoint)
    problems = []
    if not serving.bucket:
        problems.append("serving.bucket is empty: name the S3 bucket for model artifacts")
    if not serving.role_arn.startswith("arn:") or ":role/" not in serving.role_arn:
        problems.append(
            f"serving.role_arn={serving.role_arn!r}: set the ARN of the SageMaker execution "
            "role (arn:aws:iam::<account>:role/<name>)"
        )
    if serving.instance_count < 1:
        problems.append(f"serving.instance_count={serving.instance_count} must be >= 1")
    if serving.data_capture and not serving.data_capture_s3_uri.startswith("s3://"):
        problems.append(
            "serving.data_capture=true needs serving.data_capture_s3_uri (s3://bucket/prefix)"
        )
    if not 0 <= serving.data_capture_percent <= 100:
        problems.append(
            f"serving.data_capture_percent={serving.data_capture_percent} must be 0 to 100"
        )
    if bool(serving.subnets) != bool(serving.security_groups):
        problems.append("serving.subnets and serving.security_groups must be set together (VPC)")
    if serving.wait_timeout_s <= 0:
        problems.append(f"serving.wait_timeout_s={serving.wait_timeout_s} must be > 0")
    if serving.multipart_threshold_mb < S3_MIN_PART_MB:
        problems.append(
            f"serving.multipart_threshold_mb={serving.multipart_threshold_mb} must be >= "
            f"{S3_MIN_PART_MB} (S3's smallest part)"
        )
    problems += autoscaling.setting_problems(serving)
    if asynchronous:
        problems += async_invocation.setting_problems(serving)
    if problems:
        raise DeployError("cannot deploy: " + "; ".join(problems))
    return resources.image_uri(serving)


def check_endpoint_name(endpoint: str) -> None:
    """SageMaker's endpoint name rule: 1-63 letters, digits and inner hyphens."""
    if not resources.ENDPOINT_NAME.fullmatch(endpoint):
        raise DeployError(
            f"endpoint name {endpoint!r} is invalid: use 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )


def deploy(
    serving: ServingConfig,
    artifact: Path,
    version: str,
    endpoint: str,
    *,
    update: bool = False,
    asynchronous: bool = False,
    trusted_public_key_pem: str = "",
    report: Callable[[str], None] = log.info,
    upload_progress: ByteProgress | None = None,
    poll_s: float = POLL_SECONDS,
) -> Deployment:
    """Deploy ``artifact`` (version ``version``, e.g. ``v000003``) to ``endpoint``.

    Parameters
    ----------
    serving
        The ``serving`` settings (region, bucket, role, instances, KMS, VPC, capture).
    artifact
        The packaged ``model.tar.gz``.
    version, endpoint
        Version folder name and SageMaker endpoint name.
    update
        Move an existing endpoint to this version (refused when it does not exist);
        without it, an existing endpoint is refused.
    asynchronous
        An Asynchronous Inference endpoint (requests of up to 1 GB through S3; answers
        and errors written to ``serving.async_output_path`` and ``_failure_path``).
    trusted_public_key_pem
        The consortium's public key; the container then verifies the model's signature
        at start (``model_fn``). Empty: it only checks the weights' hash.
    report
        Receives one line per step and per status poll.
    upload_progress
        Receives (bytes uploaded, total bytes).
    poll_s
        Seconds between status polls.

    Returns
    -------
    Deployment
        The names created and the final status (InService).
    """
    image = check_settings(serving, endpoint, asynchronous)
    if not artifact.is_file():
        raise DeployError(f"artifact {artifact} does not exist or is not a file")
    session = aws_session(serving.region)
    live = find_endpoint(endpoint, session, serving.region)
    _check_update_flag(live, endpoint, version, update, serving.region)
    if live is not None:
        _check_same_kind(live, asynchronous, session, serving.region)
    if asynchronous:
        _check_async_buckets(serving, session)
    report(f"uploading {artifact} ({artifact.stat().st_size} bytes)")
    model_data_url = upload_artifact(serving, artifact, version, session, upload_progress)
    name = resources.resource_name(endpoint, version, datetime.now(UTC))
    tags = resources.tags(endpoint, version)
    report(f"creating model and endpoint configuration {name} ({image})")
    aws_call(
        f"creating model {name} (check serving.role_arn, serving.subnets)",
        lambda: resources.create_model(
            serving,
            name,
            image,
            model_data_url,
            tags,
            session,
            trusted_public_key_pem,
            asynchronous,
        ),
    )
    aws_call(
        f"creating endpoint configuration {name}",
        lambda: resources.create_endpoint_config(serving, name, name, tags, session, asynchronous),
    )
    if live is None:
        report(f"creating endpoint {endpoint}")
        live = aws_call(
            f"creating endpoint {endpoint}",
            lambda: Endpoint.create(
                endpoint_name=endpoint,
                endpoint_config_name=name,
                tags=tags,
                session=session,
                region=serving.region,
            ),
        )
    else:
        report(f"updating endpoint {endpoint}: {live.endpoint_config_name} -> {name}")
        live.endpoint_config_name = name
        aws_call(f"updating endpoint {endpoint}", live.update)
    wait_in_service(live, serving.wait_timeout_s, poll_s, report)
    if live.endpoint_config_name != name:
        raise DeployError(
            f"endpoint {endpoint} rolled back to {live.endpoint_config_name}: "
            f"{_failure_reason(live)}"
        )
    autoscaling.register(serving, endpoint, session, report, asynchronous)
    return Deployment(endpoint, name, name, model_data_url, image, str(live.endpoint_status))


def _check_update_flag(
    live: Endpoint | None, endpoint: str, version: str, update: bool, region: str
) -> None:
    if live is None:
        if update:
            raise DeployError(
                f"endpoint {endpoint!r} does not exist in {region} (serving.region); "
                "deploy it first without --update"
            )
        return
    if live.endpoint_status in FAILED_STATES:
        raise DeployError(
            f"endpoint {endpoint!r} is {live.endpoint_status} ({_failure_reason(live)}); "
            f"run `fractofl serve delete {endpoint}`, then deploy again"
        )
    if not update:
        raise DeployError(
            f"endpoint {endpoint!r} already exists in {region} (serving "
            f"{live.endpoint_config_name}); add --update to move it to {version} without "
            f"downtime, or run `fractofl serve delete {endpoint}` first"
        )
    if live.endpoint_status != IN_SERVICE:
        raise DeployError(
            f"endpoint {endpoint!r} is {live.endpoint_status}; it can be updated once it "
            "is InService"
        )


def _check_same_kind(
    live: Endpoint, asynchronous: bool, session: boto3.Session, region: str
) -> None:
    """An update keeps the endpoint's kind (real-time or asynchronous)."""
    name = str(live.endpoint_name)
    was_async = aws_call(
        f"describing endpoint configuration {live.endpoint_config_name}",
        lambda: resources.is_asynchronous(str(live.endpoint_config_name), session, region),
    )
    if was_async != asynchronous:
        kind, flag = (
            ("asynchronous", "with --async") if was_async else ("real-time", "without --async")
        )
        raise DeployError(
            f"endpoint {name!r} is {kind}: update it {flag}, or deploy the other kind under "
            f"another name (or `fractofl serve delete {name}` first)"
        )


def _check_async_buckets(serving: ServingConfig, session: boto3.Session) -> None:
    """The buckets of the output and failure paths exist, before anything is created:
    SageMaker could not write the answers otherwise, and a client would wait in vain."""
    s3 = session.client("s3")
    for kind in ("output", "failure"):
        setting = f"serving.async_{kind}_path"
        bucket, _ = async_invocation.split_s3_uri(
            async_invocation.async_path(serving, kind), setting
        )
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket"):
                raise DeployError(
                    f"bucket {bucket!r} of {setting} does not exist: create it, or point "
                    f"{setting} at a bucket the endpoint's role (serving.role_arn) may write to"
                ) from None
            raise explain(exc, f"checking bucket {bucket} ({setting})") from exc
        except BotoCoreError as exc:
            raise explain(exc, f"checking bucket {bucket} ({setting})") from exc


def find_endpoint(endpoint: str, session: boto3.Session, region: str) -> Endpoint | None:
    """The endpoint named ``endpoint``, or ``None`` when it does not exist."""
    try:
        return Endpoint.get(endpoint_name=endpoint, session=session, region=region)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise explain(exc, f"describing endpoint {endpoint}") from exc
    except BotoCoreError as exc:
        raise explain(exc, f"describing endpoint {endpoint}") from exc


def wait_in_service(
    endpoint: Endpoint, timeout_s: float, poll_s: float, report: Callable[[str], None]
) -> None:
    """Poll until ``endpoint`` is InService, reporting status and elapsed time.

    Raises :class:`DeployError` with SageMaker's FailureReason when it fails, or when it
    is not InService after ``timeout_s`` (``serving.wait_timeout_s``).
    """
    name = endpoint.endpoint_name
    started = time.monotonic()
    while True:
        aws_call(f"describing endpoint {name}", endpoint.refresh)
        status = str(endpoint.endpoint_status)
        elapsed = time.monotonic() - started
        report(f"endpoint {name}: {status} ({elapsed:.0f}s)")
        if status == IN_SERVICE:
            return
        if status in FAILED_STATES:
            raise DeployError(
                f"endpoint {name} is {status}: {_failure_reason(endpoint)} (container logs: "
                f"CloudWatch log group /aws/sagemaker/Endpoints/{name})"
            )
        if elapsed >= timeout_s:
            raise DeployError(
                f"endpoint {name} is still {status} after {elapsed:.0f}s "
                f"(serving.wait_timeout_s={timeout_s:g}); SageMaker carries on, so check it "
                "later or raise serving.wait_timeout_s"
            )
        time.sleep(min(poll_s, timeout_s - elapsed))


def _failure_reason(endpoint: Endpoint) -> str:
    reason = endpoint.failure_reason
    return reason if isinstance(reason, str) and reason else "SageMaker gave no FailureReason"
