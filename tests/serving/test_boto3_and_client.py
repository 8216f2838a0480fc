"""boto3's ``sagemaker-runtime`` client and :class:`EndpointClient` against the local endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.client import EndpointClient, Prediction
from fractofl.serving.errors import EndpointError
from tests.serving.conftest import PublishedModel, RunningEndpoint

REGION = "eu-central-1"


@pytest.fixture
def aws_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and no AWS configuration files: nothing can reach AWS."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def _runtime(endpoint: RunningEndpoint) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=endpoint.url,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_boto3_invoke_endpoint_works_unchanged(
    endpoint: RunningEndpoint, published: PublishedModel, images: dict[str, Path]
) -> None:
    # Execute
    response = _runtime(endpoint).invoke_endpoint(
        EndpointName=ServingConfig().endpoint_name,
        ContentType="image/tiff",
        Accept="application/json",
        Body=images["gray16.tif"].read_bytes(),
        CustomAttributes=f"api-key={endpoint.api_key}",
    )
    # Assert
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    answer = json.loads(response["Body"].read())
    assert answer["model_version"] == published.version
    assert sorted(answer["probabilities"]) == sorted(published.checkpoint.classes)


@pytest.mark.parametrize(
    ("body", "content_type", "attributes", "status", "code", "reason"),
    [
        (b"not an image", "image/png", True, 400, "ModelError", "not a readable PNG"),
        (b"x", "text/csv", True, 415, "ModelError", "is not supported"),
        (b"x", "image/png", False, 401, "AccessDeniedException", "API key"),
    ],
)
def test_boto3_errors_carry_status_code_and_reason(
    endpoint: RunningEndpoint,
    body: bytes,
    content_type: str,
    attributes: bool,
    status: int,
    code: str,
    reason: str,
) -> None:
    # Prepare
    extra = {"CustomAttributes": f"api-key={endpoint.api_key}"} if attributes else {}
    # Execute
    with pytest.raises(ClientError) as caught:
        _runtime(endpoint).invoke_endpoint(
            EndpointName="fractofl", ContentType=content_type, Body=body, **extra
        )
    # Assert
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error["Error"]["Code"] == code
    assert reason in error["Error"]["Message"]


def test_client_over_http_and_through_boto3_give_the_same_prediction(
    endpoint: RunningEndpoint,
    published: PublishedModel,
    images: dict[str, Path],
    aws_offline: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: boto3 sends SageMaker endpoint "fractofl" to the local endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    over_http = EndpointClient(endpoint.url, api_key=endpoint.api_key)
    through_boto3 = EndpointClient("fractofl", api_key=endpoint.api_key, region=REGION)
    # Execute
    answers = [
        over_http.predict(images["rgba.png"]),
        through_boto3.predict(images["rgba.png"]),
        over_http.predict(images["gray.png"].read_bytes(), "image/png"),
    ]
    # Assert
    assert answers[0] == answers[1]
    assert isinstance(answers[2], Prediction)
    assert answers[0].model_version == published.version
    assert answers[0].probability == max(answers[0].probabilities.values())


def test_client_errors_name_the_cause(
    endpoint: RunningEndpoint, images: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare
    client = EndpointClient(endpoint.url + "/invocations", api_key="wrong")
    unreachable = EndpointClient("http://127.0.0.1:9", timeout_s=5)
    # Execute / Assert
    with pytest.raises(EndpointError, match="answered 401: missing or wrong API key"):
        client.predict(images["gray.png"])
    with pytest.raises(EndpointError, match=r"cannot tell the content type from suffix '\.txt'"):
        client.predict(tmp_path / "notes.txt")
    with pytest.raises(EndpointError, match="cannot read"):
        client.predict(tmp_path / "missing.png")
    with pytest.raises(EndpointError, match=r"cannot reach http://127\.0\.0\.1:9/invocations"):
        unreachable.predict(images["gray.png"])
