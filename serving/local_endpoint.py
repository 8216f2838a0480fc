"""A local endpoint with SageMaker's container contract, serving an artifact's inference.py.

Routes: ``GET /ping``; ``POST /invocations`` (the container's); and
``POST /endpoints/<name>/invocations`` (the SageMaker Runtime API's, so boto3's
``sagemaker-runtime`` client works unchanged with ``endpoint_url``); ``GET /`` and
``GET /web/*``, the members' web page (:mod:`fractofl.serving.web_page`). Every API
reply is JSON; every error is ``{"error": reason}`` with its status, never a traceback,
and the server keeps serving after it: 401 without the API key (when one is set),
404/405 for other routes and methods, 411/413 for a missing or too large
``Content-Length`` (checked before the body is read), 429 with ``Retry-After`` for a
client over its rate (checked first), and the statuses inference.py raises (400, 406,
415). A heat
map asked for by header (``X-Fractofl-Heatmap: true`` or the custom attribute
``heatmap=true``) reaches inference.py as the content type parameter ``heatmap=true``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.contract import (
    API_KEY_ATTRIBUTE,
    API_KEY_HEADER,
    CUSTOM_ATTRIBUTES_HEADER,
    HEATMAP_OPTION,
    INVOCATIONS_PATH,
    PING_PATH,
    RUNTIME_PATH_PATTERN,
    VARIANT_HEADER,
    VARIANT_NAME,
    custom_attributes,
    heatmap_in_headers,
)
from fractofl.serving.errors import EndpointError
from fractofl.serving.rate_limit import RateLimiter
from fractofl.serving.web_page import SECURITY_HEADERS, WebAsset, load_web_assets

if TYPE_CHECKING:
    from fractofl.serving.artifact_loader import InferenceHandlers

log = logging.getLogger(__name__)

_RUNTIME_PATH = re.compile(RUNTIME_PATH_PATTERN)
SOCKET_TIMEOUT_S = 60.0
"""A client that stalls mid-request longer than SageMaker's 60 s invocation limit is dropped."""
_MIB = 1024 * 1024
DRAIN_MAX_BYTES = 64 * _MIB
"""A body that is refused unread (413, 401, ...) is still read and discarded up to this
size, so that the client, which sends it whole before reading, sees the reply instead of
a reset connection; a larger one is answered and the connection closed."""
_CHUNK = _MIB
# Error codes botocore turns into ClientError codes (x-amzn-ErrorType) on the runtime route.
_AWS_ERROR_CODES = {
    HTTPStatus.BAD_REQUEST: "ModelError",
    HTTPStatus.NOT_ACCEPTABLE: "ModelError",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "ModelError",
    HTTPStatus.UNAUTHORIZED: "AccessDeniedException",
    HTTPStatus.TOO_MANY_REQUESTS: "ThrottlingException",
    HTTPStatus.INTERNAL_SERVER_ERROR: "InternalFailure",
}


@dataclass(frozen=True)
class EndpointSettings:
    """What the server needs from ``cfg.serving`` plus the API key (``None``: no key)."""

    host: str
    port: int
    endpoint_name: str
    max_payload_bytes: int
    max_concurrent: int
    api_key: str | None
    rate_limit_per_minute: float = 0.0
    rate_limit_burst: int = 1
    web_page: bool = False
    min_confidence: float = ServingConfig.min_confidence

    @classmethod
    def from_config(cls, cfg: ServingConfig, api_key: str | None) -> EndpointSettings:
        """Check the settings and convert ``max_payload_mb`` (MiB) to bytes."""
        if cfg.max_payload_mb <= 0 or cfg.max_concurrent < 1:
            raise EndpointError(
                f"serving.max_payload_mb={cfg.max_payload_mb} must be > 0 and "
                f"serving.max_concurrent={cfg.max_concurrent} >= 1"
            )
        if not 0 <= cfg.min_confidence <= 1:
            raise EndpointError(
                f"serving.min_confidence={cfg.min_confidence} must be between 0 and 1"
            )
        if cfg.rate_limit_per_minute > 0 and cfg.rate_limit_burst < 1:
            raise EndpointError(
                f"serving.rate_limit_burst={cfg.rate_limit_burst} must be >= 1, or set "
                "serving.rate_limit_per_minute=0 to serve without a rate limit"
            )
        return cls(
            cfg.host,
            cfg.port,
            cfg.endpoint_name,
            int(cfg.max_payload_mb * _MIB),
            cfg.max_concurrent,
            api_key or None,
            cfg.rate_limit_per_minute,
            cfg.rate_limit_burst,
            cfg.web_page,
            cfg.min_confidence,
        )


def inference_worker() -> ThreadPoolExecutor:
    """The single thread that loads the model and answers every request."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fractofl-inference")


class LocalEndpoint(ThreadingHTTPServer):
    """A threading HTTP server around one artifact's inference handlers.

    Connections are served by one thread each, but the handlers run on a single
    inference thread (``worker``, which should also have loaded the model): torch's
    OpenMP pool belongs to the thread that calls it, so torch called from many threads
    keeps several pools spinning against each other on a small machine, which made
    every request about 30 % slower (bench/RESULTS.md, serving).
    """

    daemon_threads = True

    def __init__(
        self,
        handlers: InferenceHandlers,
        settings: EndpointSettings,
        worker: ThreadPoolExecutor | None = None,
    ) -> None:
        self.handlers = handlers
        self.settings = settings
        self.worker = worker or inference_worker()
        # Requests admitted at once: queued for the inference thread or running on it.
        self.slots = threading.BoundedSemaphore(settings.max_concurrent)
        self.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.web_assets: dict[str, WebAsset] = load_web_assets() if settings.web_page else {}
        try:
            super().__init__((settings.host, settings.port), _Handler)
        except OSError as exc:
            raise EndpointError(
                f"cannot listen on {settings.host}:{settings.port} ({exc}); choose another "
                "serving.port or --port, or stop what uses it"
            ) from exc

    @property
    def url(self) -> str:
        """``http://host:port`` as bound (the real port when 0 was asked for)."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def server_close(self) -> None:
        """Close the socket and stop the inference thread."""
        super().server_close()
        self.worker.shutdown(wait=False, cancel_futures=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke outside a request's own handling: log one line."""
        log.warning("connection from %s failed", client_address[0])


@dataclass(frozen=True)
class _Reply:
    """A response: a JSON object (errors, /ping) or the encoded answer's bytes."""

    status: int
    body: dict[str, Any] | bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, reason: str, **headers: str) -> _Reply:
    return _Reply(
        status, {"error": reason}, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


class _Handler(BaseHTTPRequestHandler):
    server: LocalEndpoint
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    # Headers and body leave in separate writes; with Nagle's algorithm the body would
    # wait for the client's (delayed) ACK of the headers on every keep-alive request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log; :meth:`_handle` logs one line per request."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests that the base class refuses get JSON too, and a closed
        connection (the stream cannot be trusted after them)."""
        self._keep_alive = False
        self._send(_error(code, message or HTTPStatus(code).phrase), runtime_api=False)
        method, path = self.command or "-", getattr(self, "path", "-")
        log.info("%s %s %d (refused by the HTTP layer)", method, path, code)

    def _handle(self, method: str) -> None:
        start = time.perf_counter()
        self._body_read = False
        path = urlsplit(self.path).path
        runtime = _RUNTIME_PATH.fullmatch(path)
        try:
            reply = self._route(method, path, runtime)
        except Exception:  # a bug, not the request: log it here, never send it
            log.exception("%s %s failed", method, path)
            reply = _error(500, "internal error; see the endpoint's log")
        self._keep_alive = self._body_read or self._discard_body()
        self._send(reply, runtime_api=runtime is not None)
        elapsed = (time.perf_counter() - start) * 1000
        log.info("%s %s %d %.1f ms", method, path, reply.status, elapsed)

    def _route(self, method: str, path: str, runtime: re.Match[str] | None) -> _Reply:
        settings = self.server.settings
        if path == PING_PATH:
            if method != "GET":
                return _error(405, f"{path} takes GET", Allow="GET")
            return _Reply(200, self._ping())
        if path in self.server.web_assets:
            if method != "GET":
                return _error(405, f"{path} takes GET", Allow="GET")
            asset = self.server.web_assets[path]
            return _Reply(200, asset.body, asset.content_type, dict(SECURITY_HEADERS))
        if path != INVOCATIONS_PATH and runtime is None:
            return _error(404, f"no route {path}; use POST {INVOCATIONS_PATH} or GET {PING_PATH}")
        if runtime is not None and runtime.group(1) != settings.endpoint_name:
            return _error(
                404,
                f"no endpoint {runtime.group(1)!r} here; this is {settings.endpoint_name!r} "
                "(serving.endpoint_name)",
            )
        if method != "POST":
            return _error(405, f"{path} takes POST", Allow="POST")
        wait_s = self.server.rate_limiter.acquire(self.client_address[0])
        if wait_s > 0:  # before the key check, so that keys cannot be guessed at speed
            retry_after = RateLimiter.retry_after_header(wait_s)
            return _error(
                429,
                f"too many requests from {self.client_address[0]}; retry in {retry_after} s "
                f"(serving.rate_limit_per_minute={settings.rate_limit_per_minute:g}, "
                f"serving.rate_limit_burst={settings.rate_limit_burst})",
                Retry_After=retry_after,
            )
        if settings.api_key is not None and not self._authorised(settings.api_key):
            return _error(
                401,
                f"missing or wrong API key; send {API_KEY_HEADER}: KEY, Authorization: Bearer "
                f"KEY, or the custom attribute {API_KEY_ATTRIBUTE}=KEY",
                WWW_Authenticate="Bearer",
            )
        return self._invoke()

    def _ping(self) -> dict[str, Any]:
        """Health, plus what a client (the web page) needs before its first request."""
        settings, model = self.server.settings, self.server.handlers.model
        return {
            "status": "ok",
            "model_version": self.server.handlers.version,
            "classes": list(getattr(model, "classes", ())),
            "api_key_required": settings.api_key is not None,
            "max_payload_bytes": settings.max_payload_bytes,
        }

    def _invoke(self) -> _Reply:
        settings = self.server.settings
        declared = self.headers.get("Content-Length")
        if declared is None:
            if self.headers.get("Transfer-Encoding"):
                return _error(411, "send the body with a Content-Length header")
            declared = "0"
        try:
            length = int(declared)
        except ValueError:
            return _error(400, f"Content-Length {declared!r} is not a number")
        if length > settings.max_payload_bytes:
            return _error(
                413,
                f"payload of {length} bytes exceeds the limit of "
                f"{settings.max_payload_bytes / _MIB:g} MiB (serving.max_payload_mb, "
                "SageMaker's real-time limit)",
            )
        try:
            body = self.rfile.read(length) if length > 0 else b""
        except OSError as exc:
            body = b""
            log.warning("reading a %d-byte body failed: %s", length, exc)
        self._body_read = len(body) == length
        if not self._body_read:
            return _error(400, f"the body ended after {len(body)} of {length} bytes")
        return self._predict(body)

    def _predict(self, body: bytes) -> _Reply:
        """The artifact's input_fn, predict_fn and output_fn; their errors' statuses."""
        handlers = self.server.handlers
        try:
            content_type, accept = self.headers.get("Content-Type", ""), self.headers.get("Accept")
            if heatmap_in_headers(self.headers):  # as a parameter, the form inference.py reads
                content_type += f"; {HEATMAP_OPTION}=true"

            def answer_request() -> Any:
                data = handlers.input_fn(body, content_type)
                return handlers.output_fn(handlers.predict_fn(data, handlers.model), accept)

            with self.server.slots:
                answer = self.server.worker.submit(answer_request).result()
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500:
                return _error(status, str(getattr(exc, "message", exc)))
            raise
        payload, content_type = answer if isinstance(answer, tuple) else (answer, None)
        headers = {VARIANT_HEADER: VARIANT_NAME}
        return _Reply(200, bytes(payload), content_type or "application/json", headers)

    def _discard_body(self) -> bool:
        """Read and drop an unread body (up to :data:`DRAIN_MAX_BYTES`); ``False`` when the
        connection must be closed instead."""
        try:
            remaining = int(self.headers.get("Content-Length") or 0)
            if remaining > DRAIN_MAX_BYTES or self.headers.get("Transfer-Encoding"):
                return False
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _CHUNK))
                if not chunk:
                    return False
                remaining -= len(chunk)
        except (ValueError, OSError):
            return False
        return True

    def _authorised(self, key: str) -> bool:
        offered = [self.headers.get(API_KEY_HEADER, "")]
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(token.strip())
        attributes = custom_attributes(self.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        offered.append(attributes.get(API_KEY_ATTRIBUTE, ""))
        return any(hmac.compare_digest(o.encode(), key.encode()) for o in offered if o)

    def _send(self, reply: _Reply, *, runtime_api: bool) -> None:
        headers = dict(reply.headers)
        body = reply.body
        if isinstance(body, dict):
            if runtime_api and reply.status >= 400:  # botocore reads these two
                body = {**body, "message": body["error"]}
                fallback = "ValidationError" if reply.status < 500 else "InternalFailure"
                headers["x-amzn-ErrorType"] = _AWS_ERROR_CODES.get(
                    HTTPStatus(reply.status), fallback
                )
            body = json.dumps(body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        if not self._keep_alive:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
