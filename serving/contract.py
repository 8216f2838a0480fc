"""The HTTP contract shared by the local endpoint and its clients (SageMaker's, plus a key)."""

from __future__ import annotations

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
