"""``fractofl serve deploy | delete`` against a real AWS API server (moto) on loopback
(:mod:`tests.serving.moto_aws`: the server, and what it adds to moto for these tests)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core.authorization import enable_iam_authentication
from moto.sagemaker.models import sagemaker_backends

from fractofl.cli.main import main
from fractofl.core.trust.pins import read_pins
from fractofl.core.trust.signing import create_key_pair
from fractofl.serving.aws import DeployError
from fractofl.serving.deploy import deploy, find_endpoint, wait_in_service
from fractofl.serving.s3_upload import MIB, upload_artifact
from fractofl.serving.sagemaker_resources import ENDPOINT_NAME, resource_name
from fractofl.serving.undeploy import delete
from tests.serving.moto_aws import ACCOUNT, BUCKET, REGION, ROLE
from tests.serving.moto_aws import serving_settings as _serving
from tests.serving.moto_aws import small_artifact as _artifact

IMAGE = "763104351884.dkr.ecr.eu-central-1.amazonaws.com/pytorch-inference:2.6-cpu-py312"
FAST = {"poll_s": 0.01, "report": lambda line: None}


def _cli(*argv: str) -> int:
    """``fractofl serve ARGV`` through the real entry point."""
    return main(["serve", *argv])


# ---- S3 upload ----------------------------------------------------------------------------


def test_large_artifact_goes_up_in_parts_with_sse_kms(aws: boto3.Session, tmp_path: Path) -> None:
    # Prepare: a 12 MiB artifact, a 5 MiB threshold, a KMS key.
    key_id = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
    artifact = _artifact(tmp_path, size=12 * MIB)
    seen: list[tuple[int, int]] = []
    # Execute
    uri = upload_artifact(
        _serving(multipart_threshold_mb=5, kms_key_id=key_id),
        artifact,
        "v000007",
        aws,
        lambda done, total: seen.append((done, total)),
    )
    # Assert: the object is whole, multipart (ETag "-N"), encrypted, and progress reached 100 %.
    assert uri == f"s3://{BUCKET}/fractofl/models/v000007/model.tar.gz"
    head = aws.client("s3").head_object(Bucket=BUCKET, Key="fractofl/models/v000007/model.tar.gz")
    assert head["ContentLength"] == artifact.stat().st_size
    assert re.fullmatch(r'"[0-9a-f]{32}-[0-9]+"', head["ETag"])
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(key_id)
    assert seen[-1] == (artifact.stat().st_size, artifact.stat().st_size)


def test_small_artifact_goes_up_in_one_piece(aws: boto3.Session, tmp_path: Path) -> None:
    upload_artifact(_serving(prefix=""), _artifact(tmp_path), "v000001", aws)
    head = aws.client("s3").head_object(Bucket=BUCKET, Key="v000001/model.tar.gz")
    assert "-" not in head["ETag"]
    assert "ServerSideEncryption" not in head


def test_missing_bucket_names_the_setting(aws: boto3.Session, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"'no-such-bucket' \(serving.bucket\) does not exist"):
        upload_artifact(_serving(bucket="no-such-bucket"), _artifact(tmp_path), "v000001", aws)


def test_missing_artifact_file_is_named(aws: boto3.Session, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"absent\.tar\.gz does not exist"):
        upload_artifact(_serving(), tmp_path / "absent.tar.gz", "v000001", aws)


def test_access_denied_says_which_permission(
    aws: boto3.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a user who may use SageMaker but not write to S3; IAM checks switched on.
    iam = aws.client("iam")
    iam.create_user(UserName="deployer")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="deployer", PolicyName="sm", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    artifact = _artifact(tmp_path)
    # Execute / Assert
    with enable_iam_authentication(), pytest.raises(DeployError, match="s3:PutObject"):
        upload_artifact(_serving(), artifact, "v000001", boto3.Session(region_name=REGION))


# ---- deploy, update, delete ---------------------------------------------------------------


def _describe(aws: boto3.Session, endpoint: str) -> tuple[dict, dict, dict]:
    sm = aws.client("sagemaker")
    live = sm.describe_endpoint(EndpointName=endpoint)
    config = sm.describe_endpoint_config(EndpointConfigName=live["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return live, config, model


def _trusted_key(tmp_path: Path) -> Path:
    """A consortium public key file (created once per test folder)."""
    public = tmp_path / "keys" / "trusted.pub"
    if not public.exists():
        create_key_pair(tmp_path / "keys" / "signing.key", public, None)
    return public


def _cli_setup(tmp_path: Path, versions: tuple[int, ...] = (1, 2)) -> list[str]:
    """A registry with ``versions`` and their packaged artifacts; returns Hydra overrides."""
    for number in versions:
        (tmp_path / "registry" / f"v{number:06d}").mkdir(parents=True)
        (tmp_path / "artifacts").mkdir(exist_ok=True)
        _artifact(tmp_path, f"artifacts/model-v{number:06d}.tar.gz")
    return [
        f"registry.root={tmp_path / 'registry'}",
        f"serving.artifacts={tmp_path / 'artifacts'}",
        f"serving.region={REGION}",
        f"serving.bucket={BUCKET}",
        f"serving.role_arn={ROLE}",
        "serving.wait_timeout_s=30",
        f"registry.trusted_public_key={_trusted_key(tmp_path)}",
    ]


def test_cli_deploys_update_and_delete(aws: boto3.Session, tmp_path: Path) -> None:
    # Prepare: two packaged versions; KMS, VPC and data capture switched on.
    key_id = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
    overrides = [
        *_cli_setup(tmp_path),
        "serving.instance_count=2",
        f"serving.kms_key_id={key_id}",
        "serving.subnets=[subnet-0a,subnet-0b]",
        "serving.security_groups=[sg-01]",
        "serving.data_capture=true",
        f"serving.data_capture_s3_uri=s3://{BUCKET}/capture",
        "serving.data_capture_percent=20",
        "serving.autoscaling_min_instances=1",
        "serving.autoscaling_max_instances=4",
        "serving.autoscaling_target_invocations=50",
    ]
    # Execute: deploy v1.
    assert _cli("deploy", "1", "--endpoint", "fracto-prod", *overrides) == 0
    # Assert: endpoint, configuration and model carry every setting.
    live, config, model = _describe(aws, "fracto-prod")
    assert live["EndpointStatus"] == "InService"
    assert live["DataCaptureConfig"]["CurrentSamplingPercentage"] == 20
    variant = config["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 2)
    assert config["KmsKeyId"] == key_id
    capture = config["DataCaptureConfig"]
    assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/capture"
    assert capture["InitialSamplingPercentage"] == 20
    assert capture["KmsKeyId"] == key_id
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/fractofl/models/v000001/model.tar.gz"
    assert container["Environment"] == {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        # the container's model_fn verifies the signature with the consortium's key
        "FRACTOFL_TRUSTED_PUBLIC_KEY": (tmp_path / "keys" / "trusted.pub").read_text(),
    }
    assert model["ExecutionRoleArn"] == ROLE
    assert model["VpcConfig"] == {
        "Subnets": ["subnet-0a", "subnet-0b"],
        "SecurityGroupIds": ["sg-01"],
    }
    head = aws.client("s3").head_object(Bucket=BUCKET, Key="fractofl/models/v000001/model.tar.gz")
    assert head["SSEKMSKeyId"].endswith(key_id)
    # ... and auto scaling: 1 to 4 instances, tracking 50 invocations a minute per instance
    scaling = aws.client("application-autoscaling")
    variant_id = "endpoint/fracto-prod/variant/AllTraffic"
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (
        variant_id,
        1,
        4,
    )
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tracking["TargetValue"] == 50
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    first_config = live["EndpointConfigName"]
    assert _pins(tmp_path) == [("v000001", "endpoint:fracto-prod")]  # registry retention keeps it

    # Execute: move the endpoint to v2.
    assert _cli("deploy", "v000002", "--endpoint", "fracto-prod", "--update", *overrides) == 0
    # Assert: a new configuration and model serve v2; the old ones are kept for a roll back.
    live, config, model = _describe(aws, "fracto-prod")
    assert live["EndpointStatus"] == "InService"
    assert live["EndpointConfigName"] != first_config
    assert "v000002" in live["EndpointConfigName"]
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith("/v000002/model.tar.gz")
    sm = aws.client("sagemaker")
    assert sm.describe_endpoint_config(EndpointConfigName=first_config)
    assert _pins(tmp_path) == [("v000002", "endpoint:fracto-prod")]

    # Execute: delete (with an unrelated model beside it).
    sm.create_model(ModelName="fracto-prod-manual", PrimaryContainer={"Image": IMAGE})
    assert _cli("delete", "fracto-prod", *overrides) == 0
    # Assert: endpoint, both configurations and both models are gone; the manual model stays.
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName="fracto-prod")
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["fracto-prod-manual"]
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert _pins(tmp_path) == []  # retention may remove v2 now


def test_cli_deploys_an_asynchronous_endpoint_and_keeps_its_kind(
    aws: boto3.Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    overrides = [
        *_cli_setup(tmp_path),
        "serving.autoscaling_max_instances=3",
        "serving.autoscaling_target_backlog=4",
        "serving.async_max_concurrent_per_instance=2",
    ]
    # Execute
    assert _cli("deploy", "1", "--endpoint", "fracto-async", "--async", *overrides) == 0
    # Assert: Asynchronous Inference writing to the bucket's async/ paths, scaled on its queue
    live, config, model = _describe(aws, "fracto-async")
    assert live["EndpointStatus"] == "InService"
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/fractofl/models/async/output",
            "S3FailurePath": f"s3://{BUCKET}/fractofl/models/async/failure",
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    }
    assert "asynchronous endpoint fracto-async is InService" in capsys.readouterr().out
    environment = model["PrimaryContainer"]["Environment"]  # TorchServe takes up to 1 GB
    assert environment["TS_MAX_REQUEST_SIZE"] == environment["TS_MAX_RESPONSE_SIZE"] == "1000000000"
    assert environment["SAGEMAKER_MODEL_SERVER_TIMEOUT"] == "900"
    scaling = aws.client("application-autoscaling")
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 4
    assert tracking["CustomizedMetricSpecification"]["MetricName"] == (
        "ApproximateBacklogSizePerInstance"
    )
    assert tracking["CustomizedMetricSpecification"]["Dimensions"] == [
        {"Name": "EndpointName", "Value": "fracto-async"}
    ]
    # Execute / Assert: an update keeps the kind
    assert _cli("deploy", "2", "--endpoint", "fracto-async", "--update", *overrides) == 1
    assert "is asynchronous: update it with --async" in capsys.readouterr().err
    assert _cli("deploy", "2", "--endpoint", "fracto-async", "--update", "--async", *overrides) == 0
    _, config, _ = _describe(aws, "fracto-async")
    assert "v000002" in config["EndpointConfigName"] and "AsyncInferenceConfig" in config


def test_an_asynchronous_endpoint_without_its_output_bucket_is_refused_before_anything(
    aws: boto3.Session, tmp_path: Path
) -> None:
    # Prepare
    serving = _serving(async_output_path="s3://no-such-bucket/answers")
    # Execute / Assert
    with pytest.raises(
        DeployError, match=r"bucket 'no-such-bucket' of serving.async_output_path does not exist"
    ):
        deploy(serving, _artifact(tmp_path), "v000001", "fracto", asynchronous=True, **FAST)
    assert aws.client("sagemaker").list_models()["Models"] == []
    with pytest.raises(DeployError, match=r"serving.async_failure_path='ftp://x' is not an S3"):
        deploy(
            _serving(async_failure_path="ftp://x"),
            _artifact(tmp_path),
            "v000001",
            "fracto",
            asynchronous=True,
            **FAST,
        )


def _pins(tmp_path: Path) -> list[tuple[str, str]]:
    """The registry's record of versions in use (``core/trust/pins.py``)."""
    return [(p.version, p.use) for p in read_pins(tmp_path / "registry")]


def test_cli_missing_artifact_says_to_package(
    aws: boto3.Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = _cli_setup(tmp_path, versions=(1,))
    (tmp_path / "registry" / "v000002").mkdir()
    assert _cli("deploy", "latest", "--endpoint", "fracto", *overrides) == 1
    assert "run `fractofl serve package latest` first" in capsys.readouterr().err


def test_update_of_missing_endpoint_is_refused_before_upload(
    aws: boto3.Session, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match=r"does not exist .* deploy it first without --update"):
        deploy(_serving(), _artifact(tmp_path), "v000001", "nowhere", update=True, **FAST)
    assert "Contents" not in aws.client("s3").list_objects_v2(Bucket=BUCKET)


def test_plain_deploy_onto_live_endpoint_is_refused(aws: boto3.Session, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    deploy(_serving(), artifact, "v000001", "fracto", **FAST)
    with pytest.raises(DeployError, match=r"already exists .* add --update"):
        deploy(_serving(), artifact, "v000002", "fracto", **FAST)
    live, _, _ = _describe(aws, "fracto")
    assert "v000001" in live["EndpointConfigName"]


def test_update_of_failed_endpoint_says_to_delete(aws: boto3.Session, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    deploy(_serving(), artifact, "v000001", "fracto", **FAST)
    fake = sagemaker_backends[ACCOUNT][REGION].endpoints["fracto"]
    fake.endpoint_status, fake.failure_reason = "Failed", "image pull failed"
    with pytest.raises(
        DeployError, match=r"Failed \(image pull failed\); run `fractofl serve delete fracto`"
    ):
        deploy(_serving(), artifact, "v000002", "fracto", update=True, **FAST)


def test_resource_names_fit_sagemaker_limit() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    name = resource_name("e" * 63, "v000003", created)
    assert name == f"{'e' * 32}-v000003-20260102030405678"
    assert len(name) <= 63 and ENDPOINT_NAME.fullmatch(name)


def test_delete_leaves_foreign_endpoints_alone(aws: boto3.Session) -> None:
    sm = aws.client("sagemaker")
    sm.create_model(ModelName="theirs", PrimaryContainer={"Image": IMAGE})
    variant = {
        "VariantName": "v",
        "ModelName": "theirs",
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
    }
    sm.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[variant])
    sm.create_endpoint(EndpointName="theirs", EndpointConfigName="theirs")
    with pytest.raises(DeployError, match="not created by fractofl"):
        delete(_serving(), "theirs", **FAST)
    with pytest.raises(DeployError, match="nothing to delete"):
        delete(_serving(), "never-deployed", **FAST)
    assert sm.describe_endpoint(EndpointName="theirs")["EndpointStatus"] == "InService"


def test_waiting_reports_status_and_failure_reason(aws: boto3.Session, tmp_path: Path) -> None:
    # Prepare: a deployed endpoint that SageMaker (moto's backend) reports as Creating.
    deploy(_serving(), _artifact(tmp_path), "v000001", "fracto", **FAST)
    fake = sagemaker_backends[ACCOUNT][REGION].endpoints["fracto"]
    fake.endpoint_status = "Creating"
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        fake.endpoint_status = "InService"  # ready at the second poll

    live = find_endpoint("fracto", aws, REGION)
    assert live is not None
    # Execute / Assert: it polls until InService, one line per poll.
    wait_in_service(live, timeout_s=10, poll_s=0.01, report=report)
    assert [line.split(" (")[0] for line in lines] == [
        "endpoint fracto: Creating",
        "endpoint fracto: InService",
    ]
    # Execute / Assert: Failed stops the wait with SageMaker's reason.
    fake.endpoint_status, fake.failure_reason = "Failed", "ping health check failed"
    with pytest.raises(DeployError, match="Failed: ping health check failed"):
        wait_in_service(live, timeout_s=10, poll_s=0.01, report=lambda line: None)
    # Execute / Assert: a timeout names the setting.
    fake.endpoint_status = "Creating"
    with pytest.raises(DeployError, match=r"still Creating .*serving.wait_timeout_s=0.05"):
        wait_in_service(live, timeout_s=0.05, poll_s=0.01, report=lambda line: None)


# ---- validation before any AWS call -------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "endpoint", "message"),
    [
        ({"bucket": ""}, "fracto", "serving.bucket is empty"),
        ({"role_arn": ""}, "fracto", "serving.role_arn=''"),
        ({"role_arn": "fractofl-role"}, "fracto", "serving.role_arn='fractofl-role'"),
        ({"instance_count": 0}, "fracto", "serving.instance_count=0 must be >= 1"),
        (
            {"data_capture": True},
            "fracto",
            "serving.data_capture=true needs serving.data_capture_s3_uri",
        ),
        ({"data_capture_percent": 101}, "fracto", "serving.data_capture_percent=101"),
        ({"subnets": ["subnet-1"]}, "fracto", "serving.subnets and serving.security_groups"),
        ({"multipart_threshold_mb": 1}, "fracto", "serving.multipart_threshold_mb=1"),
        ({"framework_version": "0.1"}, "fracto", "serving.framework_version=0.1"),
        ({"instance_type": "m5.large"}, "fracto", "serving.instance_type=m5.large"),
        ({}, "bad_name", "endpoint name 'bad_name' is invalid"),
        (
            {"autoscaling_max_instances": 3, "instance_count": 5},
            "fracto",
            "serving.instance_count=5 must be within serving.autoscaling_min_instances=1",
        ),
        (
            {"autoscaling_min_instances": 3, "autoscaling_max_instances": 2},
            "fracto",
            "need 1 <= min <= max",
        ),
    ],
)
def test_settings_are_checked_before_any_aws_call(
    changes: dict[str, Any],
    endpoint: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: no AWS at all (a call would fail with a connection error, not these messages).
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    # Execute / Assert
    with pytest.raises(DeployError, match=re.escape(message)):
        deploy(_serving(**changes), _artifact(tmp_path), "v000001", endpoint, **FAST)
