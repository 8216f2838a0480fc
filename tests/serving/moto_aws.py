"""A real AWS API server (moto) on loopback, for the SageMaker tests.

The server runs in this process (``ThreadedMotoServer``); boto3 and sagemaker-core reach it
through ``AWS_ENDPOINT_URL``, exactly as they would reach AWS. moto 5.2 lacks three things
SageMaker has, which :func:`_fill_moto_gaps` adds to the server for these tests:
UpdateEndpoint (not implemented: HTTP 500); AWS's answer shapes for Describe* (moto
sends ``{}`` for an absent ``VpcConfig`` or ``DataCaptureConfig``, and DescribeEndpoint's
``DataCaptureConfig`` in the request shape; sagemaker-core's typed resources reject both);
and Asynchronous Inference's work (moto answers InvokeEndpointAsync with a made-up
location and runs no model): here, as SageMaker does, the request is read from its S3
input location and handed to the endpoint's container (the URL a test registers in
:data:`ASYNC_CONTAINERS`, a real local endpoint: the same ``/invocations`` contract),
and the answer is written to the endpoint configuration's S3 output path, a refusal to
its failure path.
moto creates endpoints InService at once; tests that need other states set them on moto's
backend, which runs in this process.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core.utils import utcnow
from moto.sagemaker import responses as moto_responses
from moto.sagemaker.models import sagemaker_backends
from moto.sagemakerruntime import responses as moto_runtime
from moto.server import ThreadedMotoServer

from fractofl.core.config.run_config import ServingConfig

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-central-1"
BUCKET = "fractofl-models"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/fractofl-sagemaker"
ASYNC_CONTAINERS: dict[str, str] = {}
"""Endpoint name -> URL of the container that answers its asynchronous requests."""
CONTAINER_TIMEOUT_S = 60.0


def _fill_moto_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give moto's SageMaker UpdateEndpoint, and AWS's shapes to its Describe* answers."""
    server = moto_responses.SageMakerResponse
    for action in ("describe_model", "describe_endpoint_config", "describe_endpoint"):
        monkeypatch.setattr(server, action, _shaped_like_aws(getattr(server, action)))
    monkeypatch.setattr(server, "update_endpoint", _update_endpoint, raising=False)
    monkeypatch.setattr(
        moto_runtime.SageMakerRuntimeResponse, "invoke_endpoint_async", _invoke_endpoint_async
    )


def _shaped_like_aws(describe: Any) -> Any:
    def described(self: Any) -> Any:
        # AWS leaves out structures that are not set; moto sends {}.
        result = {k: v for k, v in describe(self).result.items() if v != {}}
        capture = result.get("DataCaptureConfig")
        if capture and "EndpointStatus" in result:  # DescribeEndpoint: the summary shape
            result["DataCaptureConfig"] = {
                "EnableCapture": capture.get("EnableCapture", True),
                "CaptureStatus": "Started" if capture.get("EnableCapture", True) else "Stopped",
                "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
                "DestinationS3Uri": capture["DestinationS3Uri"],
                **({"KmsKeyId": capture["KmsKeyId"]} if capture.get("KmsKeyId") else {}),
            }
        return moto_responses.ActionResult(result)

    return described


def _update_endpoint(self: Any) -> Any:
    """UpdateEndpoint: the endpoint now serves the named configuration."""
    backend = self.sagemaker_backend
    endpoint = self._get_param("EndpointName")
    backend.describe_endpoint(endpoint)  # the error AWS gives for a missing endpoint
    config = backend.describe_endpoint_config(self._get_param("EndpointConfigName"))
    live = backend.endpoints[endpoint]
    live.endpoint_config_name = config["EndpointConfigName"]
    live.production_variants = live._process_production_variants(config["ProductionVariants"])
    live.data_capture_config = config["DataCaptureConfig"]
    live.last_modified_time = utcnow()
    return moto_responses.ActionResult({"EndpointArn": live.arn})


def _invoke_endpoint_async(self: Any) -> Any:
    """InvokeEndpointAsync: queue the request (a thread), answer where its result will be."""
    endpoint = self.path.split("/")[2]
    backend = sagemaker_backends[ACCOUNT][REGION]
    live = backend.endpoints.get(endpoint)
    if live is None:
        return 400, {}, json.dumps({"message": f"Endpoint {endpoint} not found."})
    config = backend.endpoint_configs[live.endpoint_config_name].async_inference_config
    if not config:
        return 400, {}, json.dumps({"message": f"Endpoint {endpoint} is not asynchronous."})
    inference_id = self.headers.get("X-Amzn-SageMaker-Inference-Id") or str(uuid.uuid4())
    output = f"{config['OutputConfig']['S3OutputPath'].rstrip('/')}/{inference_id}.out"
    failure = f"{config['OutputConfig']['S3FailurePath'].rstrip('/')}/{inference_id}-error.out"
    request = {
        "input": self.headers["X-Amzn-SageMaker-InputLocation"],
        "content_type": self.headers.get("X-Amzn-SageMaker-Content-Type", ""),
        "accept": self.headers.get("X-Amzn-SageMaker-Accept", "application/json"),
        "attributes": self.headers.get("X-Amzn-SageMaker-Custom-Attributes", ""),
    }
    container = ASYNC_CONTAINERS[endpoint]
    threading.Thread(
        target=_run_async_request, args=(container, request, output, failure), daemon=True
    ).start()
    headers = {
        "X-Amzn-SageMaker-OutputLocation": output,
        "X-Amzn-SageMaker-FailureLocation": failure,
    }
    return 202, headers, json.dumps({"InferenceId": inference_id})


def _run_async_request(container: str, request: dict[str, str], output: str, failure: str) -> None:
    """SageMaker's side of one asynchronous request: S3 in, the container, S3 out."""
    s3 = boto3.client("s3", region_name=REGION)
    bucket, key = request["input"][len("s3://") :].split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    headers = {"Content-Type": request["content_type"], "Accept": request["accept"]}
    if request["attributes"]:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = request["attributes"]
    call = urllib.request.Request(
        f"{container}/invocations", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(call, timeout=CONTAINER_TIMEOUT_S) as reply:
            answer, target = reply.read(), output
    except urllib.error.HTTPError as refused:
        answer, target = refused.read(), failure
    except (urllib.error.URLError, OSError):
        return  # a container that never answers leaves no answer (the clients' timeout)
    for place in (target, failure):
        bucket, key = place[len("s3://") :].split("/", 1)
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=answer)
            return
        except s3.exceptions.ClientError:
            answer = b"could not write the answer to " + target.encode()


@pytest.fixture(scope="module")
def aws_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on loopback, and this process's AWS settings pointing at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        no_file = str(tmp_path_factory.mktemp("aws") / "absent")
        with pytest.MonkeyPatch.context() as patch:
            _fill_moto_gaps(patch)
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
                patch.delenv(name, raising=False)
            for name, value in {
                "AWS_ENDPOINT_URL": url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_CONFIG_FILE": no_file,  # nothing from ~/.aws
                "AWS_SHARED_CREDENTIALS_FILE": no_file,
                "NO_PROXY": "127.0.0.1",
            }.items():
                patch.setenv(name, value)
            yield url
    finally:
        server.stop()


@pytest.fixture
def aws(aws_url: str) -> boto3.Session:
    """A fresh account with the artifact bucket and no SageMaker resources."""
    request = urllib.request.Request(f"{aws_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return session


def small_artifact(folder: Path, name: str = "model.tar.gz", size: int = 0) -> Path:
    """A small real tar.gz to deploy (with ``size`` random bytes inside when asked);
    moto never opens it."""
    payload = folder / "payload.bin"
    payload.write_bytes(os.urandom(size) if size else b"weights")
    path = folder / name
    with tarfile.open(path, "w:gz") as archive:
        archive.add(payload, arcname="model.pt")
    return path


def serving_settings(**changes: Any) -> ServingConfig:
    """The ``serving`` settings of a deployment to the moto account."""
    return ServingConfig(**{"region": REGION, "bucket": BUCKET, "role_arn": ROLE, **changes})
