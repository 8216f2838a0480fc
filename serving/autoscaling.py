"""SageMaker Application Auto Scaling for a deployed endpoint: target tracking on the
invocations per instance (an asynchronous endpoint: on its queued requests per instance,
as AWS advises), between ``serving.autoscaling_min_instances`` and
``serving.autoscaling_max_instances``.

Registered by ``serve deploy`` once the endpoint is InService (and brought in line by
``--update``: removed when the settings no longer ask for it); removed by ``serve delete``
before the endpoint, as AWS asks. With min = max (the default, 1 and 1) nothing is
registered: the endpoint keeps ``serving.instance_count`` instances.
"""

from __future__ import annotations

from collections.abc import Callable

import boto3

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.aws import aws_call
from fractofl.serving.contract import VARIANT_NAME

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
"""Invocations a minute per instance, averaged: the predefined target-tracking metric."""
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
"""An asynchronous endpoint's queued requests per instance (CloudWatch, AWS/SageMaker)."""


def wanted(serving: ServingConfig) -> bool:
    """Whether the settings ask for auto scaling (a range of instances)."""
    return serving.autoscaling_max_instances > serving.autoscaling_min_instances


def setting_problems(serving: ServingConfig) -> list[str]:
    """What is wrong with the ``serving.autoscaling_*`` settings, for ``check_settings``."""
    low, high = serving.autoscaling_min_instances, serving.autoscaling_max_instances
    if low < 1 or high < low:
        return [
            f"serving.autoscaling_min_instances={low} and serving.autoscaling_max_instances="
            f"{high}: need 1 <= min <= max (min = max: no auto scaling)"
        ]
    problems = []
    if wanted(serving):
        if not low <= serving.instance_count <= high:
            problems.append(
                f"serving.instance_count={serving.instance_count} must be within "
                f"serving.autoscaling_min_instances={low} and _max_instances={high}"
            )
        if serving.autoscaling_target_backlog <= 0:
            problems.append(
                f"serving.autoscaling_target_backlog={serving.autoscaling_target_backlog} must "
                "be > 0 (queued requests per instance of an asynchronous endpoint)"
            )
        if serving.autoscaling_target_invocations <= 0:
            problems.append(
                f"serving.autoscaling_target_invocations={serving.autoscaling_target_invocations}"
                " must be > 0 (invocations a minute per instance)"
            )
        if (
            min(serving.autoscaling_scale_in_cooldown_s, serving.autoscaling_scale_out_cooldown_s)
            < 0
        ):
            problems.append("serving.autoscaling_scale_*_cooldown_s must be >= 0 seconds")
    return problems


def resource_id(endpoint: str) -> str:
    """The endpoint's variant as Application Auto Scaling names it."""
    return f"endpoint/{endpoint}/variant/{VARIANT_NAME}"


def policy_name(endpoint: str) -> str:
    """The target-tracking policy fractofl puts on ``endpoint``."""
    return f"fractofl-{endpoint}-invocations"


def register(
    serving: ServingConfig,
    endpoint: str,
    session: boto3.Session,
    report: Callable[[str], None],
    asynchronous: bool = False,
) -> bool:
    """Register the variant's instance range and its target-tracking policy (or remove
    them when the settings no longer ask for auto scaling); whether it is on now.
    ``asynchronous``: tracking the endpoint's queue instead of its invocations."""
    if not wanted(serving):
        remove(endpoint, session, report)
        return False
    client = session.client("application-autoscaling")
    target = resource_id(endpoint)
    low, high = serving.autoscaling_min_instances, serving.autoscaling_max_instances
    target_value, metric = _tracked(serving, endpoint, asynchronous)
    report(f"auto scaling {endpoint}: {low} to {high} instances, target {target_value:g} {metric}")
    aws_call(
        f"registering {target} for auto scaling (application-autoscaling:RegisterScalableTarget)",
        lambda: client.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=target,
            ScalableDimension=DIMENSION,
            MinCapacity=low,
            MaxCapacity=high,
        ),
    )
    aws_call(
        f"putting the scaling policy of {target} (application-autoscaling:PutScalingPolicy)",
        lambda: client.put_scaling_policy(
            PolicyName=policy_name(endpoint),
            ServiceNamespace=NAMESPACE,
            ResourceId=target,
            ScalableDimension=DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": target_value,
                **_metric_specification(endpoint, asynchronous),
                "ScaleInCooldown": int(serving.autoscaling_scale_in_cooldown_s),
                "ScaleOutCooldown": int(serving.autoscaling_scale_out_cooldown_s),
            },
        ),
    )
    return True


def _tracked(serving: ServingConfig, endpoint: str, asynchronous: bool) -> tuple[float, str]:
    """The target value and, for people, what it counts."""
    if asynchronous:
        return float(serving.autoscaling_target_backlog), "queued requests per instance"
    return float(serving.autoscaling_target_invocations), "invocations a minute per instance"


def _metric_specification(endpoint: str, asynchronous: bool) -> dict[str, object]:
    """The tracked metric: the predefined invocations one, or an asynchronous endpoint's
    backlog (AWS's documented customized metric)."""
    if not asynchronous:
        return {"PredefinedMetricSpecification": {"PredefinedMetricType": METRIC}}
    return {
        "CustomizedMetricSpecification": {
            "MetricName": BACKLOG_METRIC,
            "Namespace": "AWS/SageMaker",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
            "Statistic": "Average",
        }
    }


def remove(endpoint: str, session: boto3.Session, report: Callable[[str], None]) -> bool:
    """Remove the endpoint's scaling policies and scalable target, if registered;
    whether there was one."""
    client = session.client("application-autoscaling")
    target = resource_id(endpoint)
    found = aws_call(
        f"looking up the auto scaling of {target}",
        lambda: client.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[target], ScalableDimension=DIMENSION
        ),
    )
    if not found.get("ScalableTargets"):
        return False
    policies = aws_call(
        f"listing the scaling policies of {target}",
        lambda: client.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ResourceId=target, ScalableDimension=DIMENSION
        ),
    )
    for policy in policies.get("ScalingPolicies", []):
        name = policy["PolicyName"]
        aws_call(
            f"deleting scaling policy {name}",
            lambda name=name: client.delete_scaling_policy(
                PolicyName=name,
                ServiceNamespace=NAMESPACE,
                ResourceId=target,
                ScalableDimension=DIMENSION,
            ),
        )
    report(f"removing the auto scaling of {endpoint}")
    aws_call(
        f"deregistering {target} (application-autoscaling:DeregisterScalableTarget)",
        lambda: client.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=target, ScalableDimension=DIMENSION
        ),
    )
    return True
