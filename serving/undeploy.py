"""Delete a SageMaker endpoint and the configurations and models fractofl created for it.

Only resources tagged ``fractofl:endpoint=<endpoint>`` (see
:mod:`fractofl.serving.sagemaker_resources`) are touched; an endpoint without that tag is
refused, so a hand-made endpoint of the same name survives a mistyped command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import boto3

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving import autoscaling
from fractofl.serving import sagemaker_resources as resources
from fractofl.serving.aws import DeployError, aws_call, aws_session
from fractofl.serving.deploy import POLL_SECONDS, check_endpoint_name, find_endpoint

log = logging.getLogger("fractofl")


def delete(
    serving: ServingConfig,
    endpoint: str,
    *,
    report: Callable[[str], None] = log.info,
    poll_s: float = POLL_SECONDS,
) -> list[str]:
    """Delete ``endpoint``, wait until it is gone, then delete its configurations and models.

    Parameters
    ----------
    serving
        ``region`` and ``wait_timeout_s`` are used.
    endpoint
        The endpoint name; leftovers of a failed deploy are deleted even when the
        endpoint itself does not exist.
    report, poll_s
        One line per step and per status poll; seconds between polls.

    Returns
    -------
    list[str]
        What was deleted, e.g. ``["endpoint prod", "model prod-v000001-...", ...]``.
    """
    check_endpoint_name(endpoint)
    session, region = aws_session(serving.region), serving.region
    deleted = []
    live = find_endpoint(endpoint, session, region)
    if live is not None:
        owned = aws_call(
            f"listing the tags of endpoint {endpoint}",
            lambda: resources.is_owned(live.endpoint_arn, endpoint, session, region),
        )
        if not owned:
            raise DeployError(
                f"endpoint {endpoint!r} was not created by fractofl (no "
                f"{resources.OWNER_TAG} tag); delete it with the AWS console or CLI"
            )
        if autoscaling.remove(endpoint, session, report):  # before the endpoint, as AWS asks
            deleted.append(f"auto scaling of {endpoint}")
        report(f"deleting endpoint {endpoint}")
        aws_call(f"deleting endpoint {endpoint}", live.delete)
        _wait_gone(endpoint, session, serving, poll_s, report)
        deleted.append(f"endpoint {endpoint}")
    # What fractofl made for the endpoint, configurations before the models they name.
    made_for_it: list[tuple[str, Callable[[], list[Any]], Callable[[Any], str]]] = [
        (
            "endpoint configuration",
            lambda: resources.owned_endpoint_configs(endpoint, session, region),
            lambda config: config.endpoint_config_name,
        ),
        (
            "model",
            lambda: resources.owned_models(endpoint, session, region),
            lambda model: model.model_name,
        ),
    ]
    for kind, find, name_of in made_for_it:
        for item in aws_call(f"listing the {kind}s of {endpoint}", find):
            name = f"{kind} {name_of(item)}"
            report(f"deleting {name}")
            aws_call(f"deleting {name}", item.delete)
            deleted.append(name)
    if not deleted:
        raise DeployError(
            f"nothing to delete: no endpoint {endpoint!r} and no configuration or model "
            f"tagged {resources.OWNER_TAG}={endpoint} in {region} (serving.region)"
        )
    return deleted


def _wait_gone(
    endpoint: str,
    session: boto3.Session,
    serving: ServingConfig,
    poll_s: float,
    report: Callable[[str], None],
) -> None:
    """Poll until DescribeEndpoint no longer finds ``endpoint`` (Deleting takes minutes)."""
    timeout_s = serving.wait_timeout_s
    started = time.monotonic()
    while (live := find_endpoint(endpoint, session, serving.region)) is not None:
        elapsed = time.monotonic() - started
        report(f"endpoint {endpoint}: {live.endpoint_status} ({elapsed:.0f}s)")
        if elapsed >= timeout_s:
            raise DeployError(
                f"endpoint {endpoint} is still {live.endpoint_status} after {elapsed:.0f}s "
                f"(serving.wait_timeout_s={timeout_s:g}); run the delete again later"
            )
        time.sleep(min(poll_s, timeout_s - elapsed))
