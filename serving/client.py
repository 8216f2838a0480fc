"""Query an endpoint from Python: a local endpoint over HTTP, or SageMaker through boto3.

>>> client = EndpointClient("http://127.0.0.1:8080")          # fractofl serve local
>>> client = EndpointClient("fractofl", region="eu-central-1")  # a SageMaker endpoint
>>> client.predict("broken_shaft.tif").label
'fatigue'
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fractofl.core.images.scale import SemScale
from fractofl.serving.contract import (
    API_KEY_ATTRIBUTE,
    API_KEY_HEADER,
    DATABAR_OPTION,
    HEATMAP_OPTION,
    INVOCATIONS_PATH,
    MAP_OPTION,
    PIXEL_SIZE_OPTION,
)
from fractofl.serving.errors import EndpointError

CONTENT_TYPES_BY_SUFFIX = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".npy": "application/x-npy",
}
DEFAULT_TIMEOUT_S = 70.0
"""AWS's advice for SageMaker clients: the model may take 60 s, so wait a little longer."""
DEFAULT_BUSY_RETRIES = 3
MAX_RETRY_AFTER_S = 60.0
"""A 429's ``Retry-After`` is obeyed up to this long; a longer one is an error at once."""
_JSON = "application/json"
_BUSY = (429, 503)
"""Refusals that name a ``Retry-After`` and mean "later": over the rate, or busy."""


@dataclass(frozen=True)
class Prediction:
    """One answer: the class, every class's (calibrated) probability and the model
    version; ``uncertain`` with its reasons when it should go to an expert; with
    ``heatmap`` asked for, the Grad-CAM map (float32 H x W in [0, 1], the image's size)."""

    label: str
    probabilities: dict[str, float]
    model_version: str
    heatmap: np.ndarray | None = None
    uncertain: bool = False
    uncertain_reasons: tuple[str, ...] = ()
    provenance: dict[str, Any] | None = None
    """The model's version, run, round, contributing members, signer and preprocessing,
    as the endpoint's signed metadata gives them (``None`` from an older endpoint)."""
    mechanism_map: dict[str, Any] | None = None
    """With ``mechanism_map`` asked for: the answer's ``map`` (tiles, their
    probabilities, each class's area fraction; README, "Mechanism map")."""

    @property
    def probability(self) -> float:
        """The probability of the predicted class."""
        return self.probabilities[self.label]

    @classmethod
    def from_json(cls, body: bytes, source: str) -> Prediction:
        """Parse an endpoint's JSON answer; ``source`` names the endpoint in errors."""
        try:
            values = json.loads(body)
            heatmap = values.get("heatmap")
            return cls(
                str(values["class"]),
                {str(k): float(v) for k, v in values["probabilities"].items()},
                str(values["model_version"]),
                None if heatmap is None else _decode_heatmap(heatmap),
                bool(values.get("uncertain", False)),
                tuple(str(r) for r in values.get("uncertain_reasons", ())),
                _optional_object(values.get("provenance")),
                _optional_object(values.get("map")),
            )
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            binascii.Error,
            UnidentifiedImageError,
        ) as exc:
            raise EndpointError(
                f"{source} answered something that is not a fractofl prediction: {exc}"
            ) from None


def _optional_object(value: Any) -> dict[str, Any] | None:
    """An optional JSON object of the answer (provenance, map)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"a {type(value).__name__} where an object belongs")
    return value


def describe_contributors(contributors: Sequence[str] | None) -> str:
    """A version's members for people: ``org1, org2``; ``none``; or ``not recorded`` for a
    version published before they were signed."""
    if contributors is None:
        return "not recorded"
    return ", ".join(contributors) or "none"


def describe_provenance(provenance: dict[str, Any]) -> str:
    """One line for people: ``v000003 (run ab12, round 3), signed by SHA256:... (verified);
    members: org1, org2``."""
    verified = "verified" if provenance.get("signature_verified") else "NOT verified"
    members = describe_contributors(provenance.get("contributors"))
    return (
        f"{provenance.get('model_version')} (run {provenance.get('run_id')}, round "
        f"{provenance.get('round')}), signed by {provenance.get('signer')} ({verified}); "
        f"members: {members}"
    )


class EndpointClient:
    """A fractofl endpoint: ``target`` is a URL (local endpoint) or a SageMaker name.

    Parameters
    ----------
    target
        ``http(s)://host:port`` (``/invocations`` is added unless the path names a
        route), or the name of a SageMaker endpoint.
    api_key
        The local endpoint's API key, if it has one.
    region
        AWS region of a SageMaker endpoint (default: boto3's configuration).
    timeout_s
        How long to wait for one answer.
    busy_retries
        How often a request refused with 429 (the local endpoint's rate limit) or 503
        (its model busy) is sent again after the ``Retry-After`` it names; boto3 retries
        SageMaker's throttling itself.
    """

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        region: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        busy_retries: int = DEFAULT_BUSY_RETRIES,
    ) -> None:
        self.target = target
        self.busy_retries = busy_retries
        self.api_key = api_key or None
        self.region = region
        self.timeout_s = timeout_s
        self.is_url = target.startswith(("http://", "https://"))
        self._runtime: Any = None

    def predict(
        self,
        image: Path | str | bytes,
        content_type: str | None = None,
        heatmap: bool = False,
        scale: SemScale | None = None,
        mechanism_map: bool = False,
    ) -> Prediction:
        """Classify one image (a file, or its bytes with ``content_type``); ``heatmap``
        asks for :attr:`Prediction.heatmap` too (sent as ``CONTENT-TYPE; heatmap=true``);
        ``scale`` gives a physical-scale model the image's pixel size and data bar;
        ``mechanism_map`` asks such a model for :attr:`Prediction.mechanism_map`."""
        if isinstance(image, bytes):
            if content_type is None:
                raise EndpointError("give content_type for image bytes, e.g. 'image/png'")
            body = image
        else:
            path = Path(image)
            content_type = content_type or guess_content_type(path)
            try:
                body = path.read_bytes()
            except OSError as exc:
                raise EndpointError(f"cannot read {path}: {exc.strerror or exc}") from None
        if heatmap:
            content_type += f"; {HEATMAP_OPTION}=true"
        if mechanism_map:
            content_type += f"; {MAP_OPTION}=true"
        if scale is not None and scale.pixel_size_um is not None:
            content_type += f"; {PIXEL_SIZE_OPTION}={scale.pixel_size_um!r}"
            if scale.databar_px is not None:
                content_type += f"; {DATABAR_OPTION}={scale.databar_px}"
        if self.is_url:
            return Prediction.from_json(self._post(body, content_type), self.target)
        return Prediction.from_json(self._invoke_sagemaker(body, content_type), self.target)

    def _post(self, body: bytes, content_type: str) -> bytes:
        url = self.target.rstrip("/")
        if not url.split("://", 1)[1].count("/"):
            url += INVOCATIONS_PATH
        headers = {"Content-Type": content_type, "Accept": _JSON}
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        for attempt in range(self.busy_retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return bytes(response.read())
            except urllib.error.HTTPError as exc:
                reason = _reason(exc.read())
                wait_s = _retry_after(exc.headers.get("Retry-After"))
                if exc.code not in _BUSY or attempt == self.busy_retries or wait_s is None:
                    raise EndpointError(f"{url} answered {exc.code}: {reason}") from None
                time.sleep(wait_s)
            except (urllib.error.URLError, OSError) as exc:
                cause = getattr(exc, "reason", exc)
                raise EndpointError(f"cannot reach {url}: {cause}; is the endpoint up?") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _invoke_sagemaker(self, body: bytes, content_type: str) -> bytes:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        arguments: dict[str, Any] = {
            "EndpointName": self.target,
            "ContentType": content_type,
            "Accept": _JSON,
            "Body": body,
        }
        if self.api_key:
            arguments["CustomAttributes"] = f"{API_KEY_ATTRIBUTE}={self.api_key}"
        try:
            if self._runtime is None:
                self._runtime = boto3.client("sagemaker-runtime", region_name=self.region)
            response = self._runtime.invoke_endpoint(**arguments)
            return bytes(response["Body"].read())
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise EndpointError(
                f"SageMaker endpoint {self.target!r} answered {error.get('Code', '?')}: "
                f"{error.get('Message', exc)}"
            ) from None
        except BotoCoreError as exc:
            raise EndpointError(
                f"cannot call SageMaker endpoint {self.target!r}: {exc} (check the AWS "
                "credentials and region, serving.region)"
            ) from None


def guess_content_type(path: Path) -> str:
    """The content type of an image file, from its suffix."""
    try:
        return CONTENT_TYPES_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise EndpointError(
            f"{path}: cannot tell the content type from suffix {path.suffix!r}; use one of "
            f"{', '.join(CONTENT_TYPES_BY_SUFFIX)}"
        ) from None


def _decode_heatmap(heatmap: dict[str, Any]) -> np.ndarray:
    """``{"width", "height", "png_base64"}`` -> float32 H x W in [0, 1]."""
    with Image.open(io.BytesIO(base64.b64decode(heatmap["png_base64"], validate=True))) as png:
        levels = np.asarray(png.convert("L"), dtype=np.float32)
    size = (int(heatmap["height"]), int(heatmap["width"]))
    if levels.shape != size:
        raise ValueError(f"heatmap PNG is {levels.shape[::-1]} px, not {size[::-1]}")
    return levels / 255.0


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` in seconds; ``None`` when absent, not a
    number, or longer than :data:`MAX_RETRY_AFTER_S`."""
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER_S else None


def _reason(body: bytes) -> str:
    """The ``error`` of a JSON error reply, else the body's start."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace") or "(no body)"
