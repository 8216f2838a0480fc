"""One request to a SageMaker Asynchronous Inference endpoint (``serve deploy --async``).

An asynchronous endpoint takes requests of up to 1 GB (a real-time one, 6 MB): the
request's image goes to S3 (``serving.async_input_path``), ``InvokeEndpointAsync`` queues
it, and SageMaker writes the container's answer to the endpoint's output path (an error
to its failure path), where the client polls for it. The image and the answer are deleted
from S3 once read, so a member's micrograph does not stay in the bucket.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.aws import error_code, failure_hint
from fractofl.serving.client import error_reason
from fractofl.serving.errors import EndpointError

ASYNC_MAX_BYTES = 1_000_000_000
"""SageMaker Asynchronous Inference's largest request (1 GB)."""
MAX_INVOCATION_TIMEOUT_S = 3600
"""SageMaker's longest ``InvocationTimeoutSeconds``."""
S3_SCHEME = "s3://"
log = logging.getLogger("fractofl")


def async_path(serving: ServingConfig, kind: str) -> str:
    """``serving.async_<kind>_path``, or ``s3://<bucket>/<prefix>/async/<kind>`` when
    empty (``kind``: input, output or failure); no trailing slash."""
    given = str(getattr(serving, f"async_{kind}_path"))
    if given:
        return given.rstrip("/")
    prefix = "/".join(p for p in (serving.prefix.strip("/"), "async", kind) if p)
    return f"{S3_SCHEME}{serving.bucket}/{prefix}"


def split_s3_uri(uri: str, setting: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); EndpointError naming ``setting`` otherwise."""
    if not uri.startswith(S3_SCHEME) or not uri[len(S3_SCHEME) :].split("/", 1)[0]:
        raise EndpointError(
            f"{setting}={uri!r} is not an S3 location: give s3://bucket/prefix (or set "
            "serving.bucket for the default)"
        )
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    return bucket, key


def setting_problems(serving: ServingConfig) -> list[str]:
    """What is wrong with the ``serving.async_*`` settings (empty when nothing)."""
    problems = []
    for kind in ("input", "output", "failure"):
        try:
            split_s3_uri(async_path(serving, kind), f"serving.async_{kind}_path")
        except EndpointError as exc:
            problems.append(str(exc))
    if not 0 < serving.async_timeout_s <= MAX_INVOCATION_TIMEOUT_S:
        problems.append(
            f"serving.async_timeout_s={serving.async_timeout_s:g} must be above 0 and at most "
            f"{MAX_INVOCATION_TIMEOUT_S} (SageMaker's limit)"
        )
    if serving.async_poll_s <= 0:
        problems.append(f"serving.async_poll_s={serving.async_poll_s:g} must be above 0")
    if serving.async_max_concurrent_per_instance < 0:
        problems.append(
            f"serving.async_max_concurrent_per_instance="
            f"{serving.async_max_concurrent_per_instance} must be 0 (SageMaker chooses) or more"
        )
    return problems


@dataclass(frozen=True)
class AsyncSettings:
    """Where a client puts its requests and how long it waits for an answer."""

    input_path: str
    timeout_s: float = 900.0
    poll_s: float = 2.0

    @classmethod
    def of(cls, serving: ServingConfig) -> AsyncSettings:
        """From the ``serving`` settings; EndpointError naming the one at fault."""
        problems = setting_problems(serving)
        if problems:
            raise EndpointError("; ".join(problems))
        return cls(async_path(serving, "input"), serving.async_timeout_s, serving.async_poll_s)


class AsyncInvoker:
    """Sends requests to one asynchronous endpoint and waits for their answers."""

    def __init__(
        self,
        endpoint: str,
        settings: AsyncSettings,
        region: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.input_bucket, self.input_prefix = split_s3_uri(
            settings.input_path, "serving.async_input_path"
        )
        session = boto3.Session(region_name=region)
        self.s3 = session.client("s3")
        self.runtime = session.client("sagemaker-runtime")
        self.sleep = sleep

    def invoke(self, body: bytes, content_type: str, accept: str, attributes: str = "") -> bytes:
        """The endpoint's answer to ``body``; EndpointError with the endpoint's reason, or
        naming what to check when no answer comes within the timeout."""
        if len(body) > ASYNC_MAX_BYTES:
            raise EndpointError(
                f"the request is {len(body)} bytes, above SageMaker's asynchronous limit of "
                f"{ASYNC_MAX_BYTES} bytes"
            )
        key = "/".join(p for p in (self.input_prefix.strip("/"), uuid.uuid4().hex) if p)
        location = f"{S3_SCHEME}{self.input_bucket}/{key}"
        try:
            self.s3.put_object(
                Bucket=self.input_bucket, Key=key, Body=body, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            raise EndpointError(
                f"cannot put the request at {location} (serving.async_input_path): "
                f"{failure_hint(exc)}"
            ) from None
        try:
            arguments: dict[str, Any] = {
                "EndpointName": self.endpoint,
                "InputLocation": location,
                "ContentType": content_type,
                "Accept": accept,
                "InvocationTimeoutSeconds": int(self.settings.timeout_s),
            }
            if attributes:
                arguments["CustomAttributes"] = attributes
            try:
                queued = self.runtime.invoke_endpoint_async(**arguments)
            except (ClientError, BotoCoreError) as exc:
                raise EndpointError(
                    f"SageMaker asynchronous endpoint {self.endpoint!r} refused the request: "
                    f"{failure_hint(exc)}"
                ) from None
            return self._answer(queued["OutputLocation"], queued.get("FailureLocation"))
        finally:
            self._delete(self.input_bucket, key)

    def _answer(self, output: str, failure: str | None) -> bytes:
        """Poll for the answer (or the failure) until ``timeout_s``."""
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            found = self._take(output)
            if found is not None:
                return found
            if failure:
                failed = self._take(failure)
                if failed is not None:
                    raise EndpointError(
                        f"asynchronous endpoint {self.endpoint!r} failed: {error_reason(failed)}"
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise EndpointError(
                    f"no answer from asynchronous endpoint {self.endpoint!r} at {output} after "
                    f"{self.settings.timeout_s:g} s (serving.async_timeout_s): the request may "
                    "still be queued, or SageMaker could not write its answer there (check "
                    "that the endpoint's role may s3:PutObject to the endpoint's output and "
                    "failure paths, and its CloudWatch log group "
                    f"/aws/sagemaker/Endpoints/{self.endpoint})"
                )
            self.sleep(min(self.settings.poll_s, left))

    def _take(self, uri: str) -> bytes | None:
        """The object at ``uri``, deleted once read; ``None`` while it does not exist."""
        bucket, key = split_s3_uri(uri, "the endpoint's output path")
        try:
            found = bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404"):
                return None
            if code == "NoSuchBucket":
                raise EndpointError(
                    f"the bucket of {uri} does not exist, so endpoint {self.endpoint!r} cannot "
                    "write its answers there: its serving.async_output_path and "
                    "async_failure_path must name existing buckets (deploy it again)"
                ) from None
            raise EndpointError(f"cannot read {uri}: {failure_hint(exc)}") from None
        except BotoCoreError as exc:
            raise EndpointError(f"cannot read {uri}: {failure_hint(exc)}") from None
        self._delete(bucket, key)
        return found

    def _delete(self, bucket: str, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:  # the answer is still good
            log.warning("could not delete s3://%s/%s: %s", bucket, key, failure_hint(exc))
