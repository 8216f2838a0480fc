"""The SageMaker model and endpoint configuration one deployment creates.

Every resource is named ``{endpoint[:32]}-{version}-{UTC time}`` (SageMaker names hold 63
characters) and tagged ``fractofl:endpoint=<endpoint>``, so that ``fractofl serve delete``
removes what fractofl made for an endpoint and nothing else. The container is SageMaker's
PyTorch inference image, running the artifact's ``code/inference.py``.
"""

from __future__ import annotations

import re
from datetime import datetime

import boto3
from sagemaker.core import image_uris
from sagemaker.core.resources import EndpointConfig, Model, Tag
from sagemaker.core.shapes import (
    AsyncInferenceClientConfig,
    AsyncInferenceConfig,
    AsyncInferenceOutputConfig,
    CaptureOption,
    ContainerDefinition,
    DataCaptureConfig,
    ProductionVariant,
    VpcConfig,
)
from sagemaker.core.shapes import Tag as TagShape

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.async_invocation import ASYNC_MAX_BYTES, async_path
from fractofl.serving.aws import DeployError

OWNER_TAG = "fractofl:endpoint"
VERSION_TAG = "fractofl:version"
IMAGE_FRAMEWORK = "pytorch"
VARIANT_NAME = "AllTraffic"
# SageMaker's PyTorch container runs code/inference.py of the extracted model.tar.gz.
CONTAINER_ENV = {
    "SAGEMAKER_PROGRAM": "inference.py",
    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
}
TRUSTED_KEY_ENV = "FRACTOFL_TRUSTED_PUBLIC_KEY"  # read by code/inference.py's model_fn
# An asynchronous endpoint's container must take what SageMaker hands it: TorchServe's
# own request and response limits (6.5 MB, read from TS_* variables: the image's
# default-ts.properties sets enable_envvars_config) and the toolkit's model server timeout.
ASYNC_REQUEST_ENV = ("TS_MAX_REQUEST_SIZE", "TS_MAX_RESPONSE_SIZE")
ASYNC_TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
CAPTURE_MODES = ("Input", "Output")
NAME_STEM_CHARS = 32  # of the endpoint name; the rest of 63 is "-v000003-<time>"
ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def image_uri(serving: ServingConfig) -> str:
    """The PyTorch inference image for the configured version, Python, instance and region.

    Read offline from the image tables bundled with sagemaker-core.
    """
    try:
        return str(
            image_uris.retrieve(
                framework=IMAGE_FRAMEWORK,
                region=serving.region,
                version=serving.framework_version,
                py_version=serving.py_version,
                instance_type=serving.instance_type,
                image_scope="inference",
            )
        )
    except ValueError as exc:
        raise DeployError(
            f"no SageMaker PyTorch inference image for serving.framework_version="
            f"{serving.framework_version}, serving.py_version={serving.py_version}, "
            f"serving.instance_type={serving.instance_type}, serving.region={serving.region}: "
            f"{exc}"
        ) from None


def resource_name(endpoint: str, version: str, created: datetime) -> str:
    """Name of the model and endpoint configuration of one deployment."""
    return (
        f"{name_stem(endpoint)}-{version}-{created:%Y%m%d%H%M%S}{created.microsecond // 1000:03d}"
    )


def name_stem(endpoint: str) -> str:
    """The part of the endpoint name every resource name of that endpoint starts with."""
    return endpoint[:NAME_STEM_CHARS].rstrip("-")


def tags(endpoint: str, version: str) -> list[TagShape]:
    """The tags that mark a resource as made by fractofl for ``endpoint``."""
    return [TagShape(key=OWNER_TAG, value=endpoint), TagShape(key=VERSION_TAG, value=version)]


def create_model(
    serving: ServingConfig,
    name: str,
    image: str,
    model_data_url: str,
    resource_tags: list[TagShape],
    session: boto3.Session,
    trusted_public_key_pem: str = "",
    asynchronous: bool = False,
) -> Model:
    """CreateModel: the PyTorch image, the artifact, the execution role and the VPC; with
    the consortium's public key in the environment, ``model_fn`` verifies the signature;
    ``asynchronous``: the container takes requests of up to 1 GB for as long as
    ``serving.async_timeout_s``."""
    environment = dict(CONTAINER_ENV)
    if trusted_public_key_pem:
        environment[TRUSTED_KEY_ENV] = trusted_public_key_pem
    if asynchronous:
        environment |= {name: str(ASYNC_MAX_BYTES) for name in ASYNC_REQUEST_ENV}
        environment[ASYNC_TIMEOUT_ENV] = str(int(serving.async_timeout_s))
    container = ContainerDefinition(
        image=image, model_data_url=model_data_url, environment=environment
    )
    optional = {}
    if serving.subnets:
        optional["vpc_config"] = VpcConfig(
            subnets=list(serving.subnets), security_group_ids=list(serving.security_groups)
        )
    return Model.create(
        model_name=name,
        primary_container=container,
        execution_role_arn=serving.role_arn,
        tags=resource_tags,
        session=session,
        region=serving.region,
        **optional,
    )


def create_endpoint_config(
    serving: ServingConfig,
    name: str,
    model_name: str,
    resource_tags: list[TagShape],
    session: boto3.Session,
    asynchronous: bool = False,
) -> EndpointConfig:
    """CreateEndpointConfig: one variant (instance type and count), KMS, data capture;
    with ``asynchronous``, Asynchronous Inference (its S3 output and failure paths)."""
    variant = ProductionVariant(
        variant_name=VARIANT_NAME,
        model_name=model_name,
        instance_type=serving.instance_type,
        initial_instance_count=serving.instance_count,
        initial_variant_weight=1.0,
    )
    optional: dict[str, object] = {}
    if serving.kms_key_id:
        optional["kms_key_id"] = serving.kms_key_id
    if serving.data_capture:
        optional["data_capture_config"] = DataCaptureConfig(
            enable_capture=True,
            initial_sampling_percentage=serving.data_capture_percent,
            destination_s3_uri=serving.data_capture_s3_uri,
            capture_options=[CaptureOption(capture_mode=mode) for mode in CAPTURE_MODES],
            **({"kms_key_id": serving.kms_key_id} if serving.kms_key_id else {}),
        )
    if asynchronous:
        optional["async_inference_config"] = async_inference_config(serving)
    return EndpointConfig.create(
        endpoint_config_name=name,
        production_variants=[variant],
        tags=resource_tags,
        session=session,
        region=serving.region,
        **optional,
    )


def async_inference_config(serving: ServingConfig) -> AsyncInferenceConfig:
    """Where SageMaker writes an asynchronous endpoint's answers and errors (encrypted
    with ``serving.kms_key_id`` when set), and how many requests one instance takes."""
    output = AsyncInferenceOutputConfig(
        s3_output_path=async_path(serving, "output"),
        s3_failure_path=async_path(serving, "failure"),
        **({"kms_key_id": serving.kms_key_id} if serving.kms_key_id else {}),
    )
    concurrent = serving.async_max_concurrent_per_instance
    if not concurrent:
        return AsyncInferenceConfig(output_config=output)
    return AsyncInferenceConfig(
        output_config=output,
        client_config=AsyncInferenceClientConfig(
            max_concurrent_invocations_per_instance=concurrent
        ),
    )


def is_asynchronous(config_name: str, session: boto3.Session, region: str) -> bool:
    """Whether the endpoint configuration ``config_name`` is of an asynchronous endpoint."""
    found = EndpointConfig.get(endpoint_config_name=config_name, session=session, region=region)
    return isinstance(found.async_inference_config, AsyncInferenceConfig)


def is_owned(arn: str, endpoint: str, session: boto3.Session, region: str) -> bool:
    """Whether the resource ``arn`` carries ``fractofl:endpoint=<endpoint>``."""
    found = Tag.get_all(resource_arn=arn, session=session, region=region)
    return any(tag.key == OWNER_TAG and tag.value == endpoint for tag in found)


def owned_endpoint_configs(
    endpoint: str, session: boto3.Session, region: str
) -> list[EndpointConfig]:
    """Endpoint configurations fractofl created for ``endpoint``."""
    found = EndpointConfig.get_all(
        name_contains=name_stem(endpoint), session=session, region=region
    )
    return [c for c in found if is_owned(c.endpoint_config_arn, endpoint, session, region)]


def owned_models(endpoint: str, session: boto3.Session, region: str) -> list[Model]:
    """Models fractofl created for ``endpoint``."""
    found = Model.get_all(name_contains=name_stem(endpoint), session=session, region=region)
    return [m for m in found if is_owned(m.model_arn, endpoint, session, region)]
