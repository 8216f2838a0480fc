"""Query an endpoint from Python: a local endpoint over HTTP, or SageMaker through boto3.

>>> client = EndpointClient("http://127.0.0.1:8080")          # fractofl serve local
>>> client = EndpointClient("fractofl", region="eu-central-1")  # a SageMaker endpoint
>>> client.predict("broken_shaft.tif").label
'fatigue'

An image over the endpoint's request limit (6 MiB for SageMaker real-time) is brought to
the model's scale here before it is sent, and sent as tiles when it is still over
(:mod:`fractofl.serving.request_preparation`); :attr:`Prediction.preparation` says so.
``asynchronous=AsyncSettings(...)`` sends requests of up to 1 GB to a SageMaker
Asynchronous Inference endpoint through S3 (:mod:`fractofl.serving.async_invocation`).
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    MODEL_INFO_TYPE,
    PING_PATH,
    PIXEL_SIZE_OPTION,
)
from fractofl.serving.errors import EndpointError

if TYPE_CHECKING:
    from fractofl.serving.async_invocation import AsyncInvoker, AsyncSettings
    from fractofl.serving.request_preparation import ModelInfo, PreparedImage

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
MIB = 1024 * 1024
REALTIME_MAX_BYTES = 6 * MIB
"""A SageMaker real-time endpoint's largest request (serving.max_payload_mb's default)."""
DEFAULT_MAX_PIECES = 64
"""Requests one map of an image over the limit may take at most (then: use an
asynchronous endpoint)."""


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
    preparation: str = ""
    """How the client sent an image over the endpoint's request limit (brought to the
    model's scale, or as tiles); empty when it went as it is."""

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
    max_request_bytes
        The endpoint's request limit; a larger image is brought to the model's scale
        first (default: what a local endpoint's ``/ping`` says, 6 MiB for SageMaker
        real-time, 1 GB for asynchronous).
    asynchronous
        Where to put requests for a SageMaker Asynchronous Inference endpoint
        (``serve deploy --async``); ``None``: a real-time endpoint.
    max_pieces
        Requests one mechanism map of an image over the limit may take.
    """

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        region: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        busy_retries: int = DEFAULT_BUSY_RETRIES,
        max_request_bytes: int | None = None,
        asynchronous: AsyncSettings | None = None,
        max_pieces: int = DEFAULT_MAX_PIECES,
    ) -> None:
        self.target = target
        self.busy_retries = busy_retries
        self.api_key = api_key or None
        self.region = region
        self.timeout_s = timeout_s
        self.is_url = target.startswith(("http://", "https://"))
        if asynchronous is not None and self.is_url:
            raise EndpointError(
                f"{target} is a URL; an asynchronous endpoint is a SageMaker endpoint name"
            )
        self.asynchronous = asynchronous
        self.max_pieces = max_pieces
        self._max_request_bytes = max_request_bytes
        self._model_info: ModelInfo | None = None
        self._runtime: Any = None
        self._async: AsyncInvoker | None = None

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
        ``mechanism_map`` asks such a model for :attr:`Prediction.mechanism_map`. An
        image over the endpoint's request limit is brought to the model's scale first
        (see the module's docstring)."""
        if isinstance(image, bytes):
            if content_type is None:
                raise EndpointError("give content_type for image bytes, e.g. 'image/png'")
            body, source = image, "the image"
        else:
            path = Path(image)
            content_type = content_type or guess_content_type(path)
            source = str(path)
            try:
                body = path.read_bytes()
            except OSError as exc:
                raise EndpointError(f"cannot read {path}: {exc.strerror or exc}") from None
        options = _options(heatmap, mechanism_map)
        if len(body) > self.max_request_bytes():
            return self._predict_prepared(body, content_type, source, scale, options)
        if scale is not None and scale.pixel_size_um is not None:
            options += f"; {PIXEL_SIZE_OPTION}={scale.pixel_size_um!r}"
            if scale.databar_px is not None:
                options += f"; {DATABAR_OPTION}={scale.databar_px}"
        return self._ask(body, content_type + options)

    def max_request_bytes(self) -> int:
        """The endpoint's request limit (a local endpoint's is asked for once)."""
        if self._max_request_bytes is None:
            if self.asynchronous is not None:
                from fractofl.serving.async_invocation import ASYNC_MAX_BYTES

                self._max_request_bytes = ASYNC_MAX_BYTES
            elif self.is_url:
                self._max_request_bytes = self._ping_limit()
            else:
                self._max_request_bytes = REALTIME_MAX_BYTES
        return self._max_request_bytes

    def model_info(self) -> ModelInfo:
        """What the endpoint says of its model (asked for once, and again after the
        endpoint moved to another version)."""
        from fractofl.serving.request_preparation import ModelInfo

        if self._model_info is None:
            try:
                values = json.loads(self._send(b"{}", MODEL_INFO_TYPE))
            except ValueError:
                values = None
            if not isinstance(values, dict):
                raise EndpointError(f"{self.target} did not describe its model")
            self._model_info = ModelInfo.from_json(values, self.target)
        return self._model_info

    def _ask(self, body: bytes, content_type: str) -> Prediction:
        return Prediction.from_json(self._send(body, content_type), self.target)

    def _send(self, body: bytes, content_type: str) -> bytes:
        if self.is_url:
            return self._post(body, content_type)
        if self.asynchronous is not None:
            return self._invoke_async(body, content_type)
        return self._invoke_sagemaker(body, content_type)

    def _predict_prepared(
        self, body: bytes, content_type: str, source: str, scale: SemScale | None, options: str
    ) -> Prediction:
        """An image over the limit: at the model's scale in one request, else as tiles."""
        from fractofl.serving import request_preparation as preparing
        from fractofl.serving.decoding import decode_request
        from fractofl.serving.request_errors import RequestError

        limit, info = self.max_request_bytes(), self.model_info()
        try:
            image = decode_request(body, content_type)
        except RequestError as exc:
            raise EndpointError(f"{source}: {exc.message}") from None
        prepared = preparing.prepare(image, scale, info.preprocessing, source)
        over = f"{source} is {len(body) / MIB:.1f} MiB, over the endpoint's {limit / MIB:.1f} MiB"
        whole = preparing.npy_bytes(prepared.pixels)
        if len(whole) > limit:
            over += f" ({len(whole) / MIB:.1f} MiB at the model's scale, {prepared.describe()})"
            return self._predict_tiled(prepared, info, options, over)
        answer = self._checked(whole, prepared.content_type + options, info)
        return replace(
            answer,
            heatmap=None
            if answer.heatmap is None
            else prepared.heatmap_to_original(answer.heatmap),
            mechanism_map=None
            if answer.mechanism_map is None
            else prepared.map_to_original(answer.mechanism_map),
            preparation=f"{over}: sent at the model's scale ({prepared.describe()}; float32, "
            "nothing rounded)",
        )

    def _predict_tiled(
        self, prepared: PreparedImage, info: ModelInfo, options: str, over: str
    ) -> Prediction:
        """The answer from the evaluation tiles' mosaic; the map from pieces."""
        from fractofl.serving import request_preparation as preparing

        grid = prepared.preprocessing.tile_grid
        notes = [
            f"{over}: answered from its {grid}x{grid} evaluation tiles, the answer the whole "
            "image gets"
        ]
        mosaic = preparing.npy_bytes(preparing.evaluation_mosaic(prepared))
        answer = self._checked(mosaic, prepared.content_type, info)
        found = None
        if f"{MAP_OPTION}=true" in options:
            size = prepared.preprocessing.image_size
            pieces = preparing.map_pieces(*prepared.pixels.shape, size, self.max_request_bytes())
            if len(pieces) > self.max_pieces:
                raise EndpointError(
                    f"the image's mechanism map would take {len(pieces)} requests (max_pieces="
                    f"{self.max_pieces}); use an asynchronous endpoint (serve deploy --async)"
                )
            maps = []
            for piece in pieces:
                part = self._checked(
                    preparing.npy_bytes(preparing.piece_pixels(prepared, piece)),
                    f"{prepared.content_type}; {MAP_OPTION}=true",
                    info,
                )
                if part.mechanism_map is None:
                    raise EndpointError(f"{self.target} answered a map request without a map")
                maps.append(part.mechanism_map)
            found = prepared.map_to_original(preparing.join_maps(pieces, maps))
            notes.append(f"map joined from {len(pieces)} pieces")
        if f"{HEATMAP_OPTION}=true" in options:
            notes.append(
                "no heat map at this size: use an asynchronous endpoint (serve deploy --async)"
            )
        return replace(answer, mechanism_map=found, preparation="; ".join(notes))

    def _checked(self, body: bytes, content_type: str, info: ModelInfo) -> Prediction:
        """The answer to a prepared request, from the version it was prepared for."""
        answer = self._ask(body, content_type)
        if answer.model_version != info.version:
            self._model_info = None
            raise EndpointError(
                f"{self.target} moved from {info.version} to {answer.model_version} while "
                "the image was being sent; ask again"
            )
        return answer

    def _ping_limit(self) -> int:
        """A local endpoint's ``max_payload_bytes`` from ``GET /ping``; SageMaker's limit
        when it does not say (a proxy that forwards only ``/invocations``, an endpoint
        that is down: the request itself then says what is wrong)."""
        scheme, rest = self.target.split("://", 1)
        url = f"{scheme}://{rest.split('/', 1)[0]}{PING_PATH}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                limit = json.loads(response.read()).get("max_payload_bytes")
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            return REALTIME_MAX_BYTES
        return int(limit) if isinstance(limit, int) and limit > 0 else REALTIME_MAX_BYTES

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
                reason = error_reason(exc.read())
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

    def _invoke_async(self, body: bytes, content_type: str) -> bytes:
        from fractofl.serving.async_invocation import AsyncInvoker

        assert self.asynchronous is not None  # checked by _send
        if self._async is None:
            self._async = AsyncInvoker(self.target, self.asynchronous, self.region)
        attributes = f"{API_KEY_ATTRIBUTE}={self.api_key}" if self.api_key else ""
        return self._async.invoke(body, content_type, _JSON, attributes)


def _options(heatmap: bool, mechanism_map: bool) -> str:
    """The content type parameters that ask for a heat map and a map."""
    return (f"; {HEATMAP_OPTION}=true" if heatmap else "") + (
        f"; {MAP_OPTION}=true" if mechanism_map else ""
    )


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


def error_reason(body: bytes) -> str:
    """The ``error`` of a JSON error reply (the contract's ``{"error": reason}``), else the
    body's start."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace") or "(no body)"
