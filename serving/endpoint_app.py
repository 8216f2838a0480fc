"""The local endpoint's routes as a Starlette application (served by uvicorn).

Routes: ``GET /ping``; ``POST /invocations`` (the container's); ``POST
/endpoints/<name>/invocations`` (the SageMaker Runtime API's, so boto3's
``sagemaker-runtime`` client works unchanged with ``endpoint_url``); ``GET /`` and
``GET /web/*``, the members' web page (:mod:`fractofl.serving.web_page`). ``HEAD`` is
answered wherever ``GET`` is. Every API reply is JSON; every error is ``{"error":
reason}`` with its status, never a traceback, and the server keeps serving after it:
401 without the API key (when one is set), 404/405 for other routes and methods, 413 for
a body over ``serving.max_payload_mb`` (checked against ``Content-Length`` before the
body is read, and while it is read), 408 for a body not received in
``serving.request_timeout_s``, 429 with ``Retry-After`` for a client over its rate
(checked first), 503 with ``Retry-After`` when the inference thread does not become free
within ``serving.max_queue_wait_s`` or ``serving.max_concurrent`` requests already wait,
and the statuses inference.py raises (400, 406, 415). A heat map or mechanism map asked
for by header (``X-Fractofl-Heatmap: true``, ``X-Fractofl-Map: true``) or custom attribute
(``heatmap=true``, ``map=true``) reaches inference.py as the content type parameter. The
model runs on :class:`~fractofl.serving.inference_queue.InferenceQueue` (one thread,
micro-batching).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fractofl.serving.contract import (
    API_KEY_ATTRIBUTE,
    API_KEY_HEADER,
    CUSTOM_ATTRIBUTES_HEADER,
    HEATMAP_OPTION,
    INVOCATIONS_PATH,
    MAP_OPTION,
    PING_PATH,
    VARIANT_HEADER,
    VARIANT_NAME,
    custom_attributes,
    heatmap_in_headers,
    map_in_headers,
)
from fractofl.serving.http_protocol import printable
from fractofl.serving.inference_queue import BusyError, InferenceQueue
from fractofl.serving.rate_limit import RateLimiter
from fractofl.serving.web_page import SECURITY_HEADERS, WebAsset

if TYPE_CHECKING:
    from fractofl.serving.artifact_loader import InferenceHandlers
    from fractofl.serving.local_endpoint import EndpointSettings

log = logging.getLogger("fractofl.serving.local_endpoint")

_MIB = 1024 * 1024
RUNTIME_ROUTE = "/endpoints/{name}/invocations"
DRAIN_MAX_BYTES = 64 * _MIB
"""A body refused unread (413, 401, ...) is still read and dropped when it is at most this
size, so that a client which sends it whole before reading sees the reply instead of a
reset connection; a larger one is answered and the connection closed."""
# Error codes botocore turns into ClientError codes (x-amzn-ErrorType) on the runtime route.
_AWS_ERROR_CODES = {
    HTTPStatus.BAD_REQUEST: "ModelError",
    HTTPStatus.NOT_ACCEPTABLE: "ModelError",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "ModelError",
    HTTPStatus.UNAUTHORIZED: "AccessDeniedException",
    HTTPStatus.TOO_MANY_REQUESTS: "ThrottlingException",
    HTTPStatus.SERVICE_UNAVAILABLE: "ServiceUnavailable",
    HTTPStatus.INTERNAL_SERVER_ERROR: "InternalFailure",
}


class _Refusal(Exception):
    """A request answered with an error before inference; raised inside a route."""

    def __init__(self, status: int, reason: str, **headers: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.headers = {k.replace("_", "-"): v for k, v in headers.items()}


def endpoint_app(
    handlers: InferenceHandlers,
    settings: EndpointSettings,
    queue: InferenceQueue,
    web_assets: dict[str, WebAsset],
) -> ASGIApp:
    """The endpoint's ASGI application: its routes, JSON errors and one log line per
    request (see the module's docstring); ``queue`` runs the model."""
    routes = _Routes(handlers, settings, queue)
    table = [
        Route(PING_PATH, routes.ping, methods=["GET"]),
        Route(INVOCATIONS_PATH, routes.invocations, methods=["POST"]),
        Route(RUNTIME_ROUTE, routes.invocations, methods=["POST"]),
        *(Route(path, _asset_route(asset), methods=["GET"]) for path, asset in web_assets.items()),
    ]
    app = Starlette(
        routes=table,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    return _RequestLog(app)


def _asset_route(asset: WebAsset) -> Any:
    async def serve_asset(request: Request) -> Response:
        return Response(asset.body, 200, dict(SECURITY_HEADERS), asset.content_type)

    return serve_asset


class _Routes:
    """The API's handlers, sharing the settings, rate limiter and inference queue."""

    def __init__(
        self, handlers: InferenceHandlers, settings: EndpointSettings, queue: InferenceQueue
    ) -> None:
        self.handlers = handlers
        self.settings = settings
        self.queue = queue
        self.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)

    async def ping(self, request: Request) -> Response:
        """Health, plus what a client (the web page) needs before its first request."""
        model = self.handlers.model
        return JSONResponse(
            {
                "status": "ok",
                "model_version": self.handlers.version,
                "classes": list(getattr(model, "classes", ())),
                "preprocessing": _preprocessing_of(model),
                "api_key_required": self.settings.api_key is not None,
                "max_payload_bytes": self.settings.max_payload_bytes,
            }
        )

    async def invocations(self, request: Request) -> Response:
        runtime = "name" in request.path_params
        try:
            return await self._invoke(request)
        except _Refusal as refusal:
            headers = dict(refusal.headers)
            if not getattr(request.state, "body_read", False) and not await self._drain(request):
                headers["Connection"] = "close"
            return error_response(refusal.status, refusal.reason, runtime, headers)

    async def _drain(self, request: Request) -> bool:
        """Read and drop an unread body of at most :data:`DRAIN_MAX_BYTES`; ``False`` when
        the connection must be closed instead (larger, of unknown size, or too slow)."""
        declared = request.headers.get("content-length")
        if declared is None or int(declared) > DRAIN_MAX_BYTES:
            return False
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                async for _ in request.stream():
                    pass
        except (TimeoutError, ClientDisconnect):
            return False
        return True

    async def _invoke(self, request: Request) -> Response:
        settings = self.settings
        name = request.path_params.get("name")
        if name is not None and name != settings.endpoint_name:
            raise _Refusal(
                404,
                f"no endpoint {name!r} here; this is {settings.endpoint_name!r} "
                "(serving.endpoint_name)",
            )
        client = request.client.host if request.client else "-"
        wait_s = self.rate_limiter.acquire(client)
        if wait_s > 0:  # before the key check, so that keys cannot be guessed at speed
            retry_after = RateLimiter.retry_after_header(wait_s)
            raise _Refusal(
                429,
                f"too many requests from {client}; retry in {retry_after} s "
                f"(serving.rate_limit_per_minute={settings.rate_limit_per_minute:g}, "
                f"serving.rate_limit_burst={settings.rate_limit_burst})",
                Retry_After=retry_after,
            )
        if settings.api_key is not None and not _authorised(request, settings.api_key):
            raise _Refusal(
                401,
                f"missing or wrong API key; send {API_KEY_HEADER}: KEY, Authorization: Bearer "
                f"KEY, or the custom attribute {API_KEY_ATTRIBUTE}=KEY",
                WWW_Authenticate="Bearer",
            )
        body = await self._body(request)
        request.state.body_read = True
        return await self._predict(request, body)

    async def _body(self, request: Request) -> bytes:
        """The body, refused (413) as soon as it is known to exceed the limit, and (408)
        when it is not received within ``serving.request_timeout_s``."""
        limit = self.settings.max_payload_bytes
        declared = request.headers.get("content-length")  # h11 has checked its digits
        if declared is not None and int(declared) > limit:
            raise _too_large(int(declared), limit)
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise _too_large(len(body), limit)
        except TimeoutError:
            raise _Refusal(
                408,
                f"the body was not received within {self.settings.request_timeout_s:g} s "
                "(serving.request_timeout_s)",
                Connection="close",
            ) from None
        except ClientDisconnect:
            raise _Refusal(400, "the client went away before sending the whole body") from None
        return bytes(body)

    async def _predict(self, request: Request, body: bytes) -> Response:
        """The artifact's answer from the inference thread (batched with other requests);
        its errors' statuses."""
        content_type = request.headers.get("content-type", "")
        accept = request.headers.get("accept")
        if heatmap_in_headers(request.headers):  # as a parameter, the form inference.py reads
            content_type += f"; {HEATMAP_OPTION}=true"
        if map_in_headers(request.headers):
            content_type += f"; {MAP_OPTION}=true"
        try:
            answer = await self.queue.run((body, content_type, accept))
        except BusyError as exc:
            raise _Refusal(503, str(exc), Retry_After=str(exc.retry_after)) from None
        if isinstance(answer, BaseException):
            status = getattr(answer, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500:
                raise _Refusal(status, str(getattr(answer, "message", answer)))
            raise answer
        payload, answer_type = answer
        return Response(bytes(payload), 200, {VARIANT_HEADER: VARIANT_NAME}, answer_type)


def _preprocessing_of(model: object) -> dict[str, object] | None:
    """The model's preprocessing, which the page needs to bring a large image to scale."""
    preprocessing = getattr(model, "preprocessing", None)
    return preprocessing.to_dict() if preprocessing is not None else None


def error_response(
    status: int, reason: str, runtime_api: bool, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``{"error": reason}`` with ``status``; on the runtime route also the ``message``
    and ``x-amzn-ErrorType`` that botocore reads."""
    body: dict[str, str] = {"error": reason}
    headers = dict(headers or {})
    if runtime_api:
        body["message"] = reason
        fallback = "ValidationError" if status < 500 else "InternalFailure"
        headers["x-amzn-ErrorType"] = _AWS_ERROR_CODES.get(HTTPStatus(status), fallback)
    return JSONResponse(body, status, headers)


def _too_large(size: int, limit: int) -> _Refusal:
    return _Refusal(
        413,
        f"payload of {size} bytes exceeds the limit of {limit / _MIB:g} MiB "
        "(serving.max_payload_mb, SageMaker's real-time limit)",
    )


def _authorised(request: Request, key: str) -> bool:
    offered = [request.headers.get(API_KEY_HEADER, "")]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        offered.append(token.strip())
    attributes = custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
    offered.append(attributes.get(API_KEY_ATTRIBUTE, ""))
    return any(hmac.compare_digest(o.encode(), key.encode()) for o in offered if o)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's routing refusals (404, 405) as the endpoint's JSON errors."""
    assert isinstance(exc, HTTPException)
    path = printable(request.url.path, 100)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        reason = f"no route {path}; use POST {INVOCATIONS_PATH} or GET {PING_PATH}"
    elif exc.status_code == 405:
        # Starlette keeps a route's methods in a set: the header in a stable order
        allowed = sorted(m.strip() for m in headers.get("Allow", "").split(",") if m.strip())
        headers["Allow"] = ", ".join(allowed)
        reason = f"{path} takes {' or '.join(m for m in allowed if m != 'HEAD')}"
    else:
        reason = str(exc.detail)
    return error_response(exc.status_code, reason, False, headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug, not the request: logged by uvicorn with its traceback, never sent."""
    return error_response(500, "internal error; see the endpoint's log", False)


class _RequestLog:
    """One log line per request (method, escaped path, status, time) and a request id
    on every answer, as SageMaker's ``x-amzn-RequestId``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-amzn-requestid", str(uuid.uuid4()).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %d %.1f ms",
                printable(scope["method"], 20),
                printable(scope["path"], 200),
                status[0] or 500,
                (time.perf_counter() - start) * 1000,
            )
