"""The HTTP contract shared by the local endpoint and its clients (SageMaker's, plus a key)."""

from __future__ import annotations

import re
from collections.abc import Mapping

PING_PATH = "/ping"
INVOCATIONS_PATH = "/invocations"
RUNTIME_PATH_PATTERN = r"/endpoints/([^/]+)/invocations"
"""The SageMaker Runtime API's ``InvokeEndpoint`` route, which boto3 calls."""
VARIANT_HEADER = "x-Amzn-Invoked-Production-Variant"
VARIANT_NAME = "AllTraffic"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
API_KEY_HEADER = "X-Api-Key"
API_KEY_ATTRIBUTE = "api-key"
"""``CustomAttributes="api-key=KEY"`` in boto3's ``invoke_endpoint`` carries the key."""
HEATMAP_HEADER = "X-Fractofl-Heatmap"
HEATMAP_OPTION = "heatmap"
"""``heatmap=true``: a custom attribute, or a content type parameter (``image/png;
heatmap=true``), the one form that reaches inference.py in every container."""
MAP_HEADER = "X-Fractofl-Map"
MAP_OPTION = "map"
"""``map=true``: the mechanism map (a physical-scale model's tiles over the whole
image), asked for as the heat map is: custom attribute, header or content type parameter."""
PREVIEW_OPTION = "preview"
"""``image/tiff; preview=true``: the answer carries the decoded image as an 8-bit PNG."""
PIXEL_SIZE_OPTION = "pixel_size_um"
"""``image/tiff; pixel_size_um=0.05``: the request image's micrometres per pixel, which a
physical-scale model needs (and ``databar_px=59``, the height of its data bar, when it
is not found by itself)."""
DATABAR_OPTION = "databar_px"
MODEL_INFO_TYPE = "application/vnd.fractofl.model-info"
"""A request of this content type (its body is ignored) is answered with the model's
version, classes, preprocessing, provenance and request-image bounds instead of a
prediction: what a client needs to bring a large image to the model's scale before
sending it (a SageMaker endpoint has no route but ``/invocations``)."""
_TRUE = {"1", "true", "yes", "on"}


def custom_attributes(value: str | None) -> dict[str, str]:
    """``"api-key=K; heatmap=true"`` -> ``{"api-key": "K", "heatmap": "true"}`` (names
    lower-cased; ``;`` or ``,`` separate attributes)."""
    attributes: dict[str, str] = {}
    for attribute in re.split(r"[;,]", value or ""):
        name, _, setting = attribute.partition("=")
        if name.strip():
            attributes[name.strip().lower()] = setting.strip()
    return attributes


def is_true(value: str | None) -> bool:
    """Whether an option's text means yes: ``true``, ``1``, ``yes`` or ``on``."""
    return (value or "").strip().lower() in _TRUE


def heatmap_in_headers(headers: Mapping[str, object]) -> bool:
    """Whether request headers ask for a heat map: :data:`HEATMAP_HEADER` or the custom
    attribute ``heatmap=true`` (header names matched in any case)."""
    return option_in_headers(headers, HEATMAP_HEADER, HEATMAP_OPTION)


def map_in_headers(headers: Mapping[str, object]) -> bool:
    """Whether request headers ask for a mechanism map: :data:`MAP_HEADER` or the
    custom attribute ``map=true``."""
    return option_in_headers(headers, MAP_HEADER, MAP_OPTION)


def option_in_headers(headers: Mapping[str, object], header: str, attribute: str) -> bool:
    """Whether ``header`` or the custom attribute ``attribute`` says yes (header names
    matched in any case)."""
    lowered = {
        str(k).lower(): v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        for k, v in headers.items()
    }
    attributes = custom_attributes(lowered.get(CUSTOM_ATTRIBUTES_HEADER.lower()))
    return is_true(lowered.get(header.lower())) or is_true(attributes.get(attribute))
