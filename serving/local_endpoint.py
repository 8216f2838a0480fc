"""A local endpoint with SageMaker's container contract, serving an artifact's inference.py.

A Starlette application (:mod:`fractofl.serving.endpoint_app`: routes, JSON errors,
limits) served by uvicorn with a guarded h11 protocol
(:mod:`fractofl.serving.http_protocol`: per-request deadline, connection cap), on a
socket this module binds, so that a bad address fails before the model is served and
port 0 gets a real port at once.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn

from fractofl.core.config.run_config import ServingConfig
from fractofl.core.images.imageio import ImageBounds
from fractofl.serving.endpoint_app import endpoint_app
from fractofl.serving.errors import EndpointError
from fractofl.serving.http_protocol import ConnectionLimits, guarded_protocol
from fractofl.serving.inference import DEFAULT_IMAGE_BOUNDS
from fractofl.serving.inference_queue import InferenceQueue
from fractofl.serving.package import image_bounds_of
from fractofl.serving.web_page import load_web_assets

if TYPE_CHECKING:
    from fractofl.serving.artifact_loader import InferenceHandlers

_MIB = 1024 * 1024
SHUTDOWN_GRACE_S = 5.0
"""Requests under way when the endpoint is stopped get this long to finish."""
MAX_HEADER_BYTES = 16 * 1024
"""Request headers still incomplete beyond this are refused (431)."""


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
    max_queue_wait_s: float = ServingConfig.max_queue_wait_s
    max_batch: int = ServingConfig.max_batch
    max_batch_wait_ms: float = ServingConfig.max_batch_wait_ms
    request_timeout_s: float = ServingConfig.request_timeout_s
    keep_alive_s: float = ServingConfig.keep_alive_s
    max_connections: int = ServingConfig.max_connections
    listen_backlog: int = ServingConfig.listen_backlog
    image_bounds: ImageBounds = DEFAULT_IMAGE_BOUNDS

    @classmethod
    def from_config(cls, cfg: ServingConfig, api_key: str | None) -> EndpointSettings:
        """Check the settings and convert ``max_payload_mb`` (MiB) to bytes."""
        if cfg.max_payload_mb <= 0 or cfg.max_concurrent < 1:
            raise EndpointError(
                f"serving.max_payload_mb={cfg.max_payload_mb} must be > 0 and "
                f"serving.max_concurrent={cfg.max_concurrent} >= 1"
            )
        for name in ("max_queue_wait_s", "request_timeout_s", "keep_alive_s"):
            if not getattr(cfg, name) > 0:
                raise EndpointError(f"serving.{name}={getattr(cfg, name)} must be > 0 seconds")
        if cfg.max_batch < 1 or cfg.max_batch_wait_ms < 0:
            raise EndpointError(
                f"serving.max_batch={cfg.max_batch} must be >= 1 and serving.max_batch_wait_ms="
                f"{cfg.max_batch_wait_ms} >= 0"
            )
        if cfg.max_connections < 1 or cfg.listen_backlog < 1:
            raise EndpointError(
                f"serving.max_connections={cfg.max_connections} and serving.listen_backlog="
                f"{cfg.listen_backlog} must be >= 1"
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
            cfg.max_queue_wait_s,
            cfg.max_batch,
            cfg.max_batch_wait_ms,
            cfg.request_timeout_s,
            cfg.keep_alive_s,
            cfg.max_connections,
            cfg.listen_backlog,
            image_bounds_of(cfg),
        )


def inference_worker() -> ThreadPoolExecutor:
    """The single thread that loads the model and answers every request."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fractofl-inference")


class LocalEndpoint:
    """uvicorn serving :func:`~fractofl.serving.endpoint_app.endpoint_app` for one
    artifact's inference handlers, on a socket bound at construction.

    ``serve_forever`` blocks until ``shutdown`` (from another thread) or, in the main
    thread, SIGINT/SIGTERM; ``server_close`` releases the socket and the inference
    thread (``worker``, which should also have loaded the model).
    """

    def __init__(
        self,
        handlers: InferenceHandlers,
        settings: EndpointSettings,
        worker: ThreadPoolExecutor | None = None,
    ) -> None:
        self.handlers = handlers
        self.settings = settings
        self.worker = worker or inference_worker()
        self.socket = _bind(settings)
        assets = load_web_assets() if settings.web_page else {}
        self.queue = InferenceQueue(
            self.worker,
            lambda requests: handlers.transform_batch(handlers.model, requests),
            settings.max_concurrent,
            settings.max_queue_wait_s,
            settings.max_batch,
            settings.max_batch_wait_ms / 1000,
        )
        limits = ConnectionLimits(settings.request_timeout_s, settings.max_connections)
        config = uvicorn.Config(
            endpoint_app(handlers, settings, self.queue, assets),
            http=guarded_protocol(limits),
            lifespan="off",
            ws="none",
            log_config=None,  # the CLI's logging stays as it is
            access_log=False,  # the app logs one line per request itself
            server_header=False,
            timeout_keep_alive=int(max(1, settings.keep_alive_s)),
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
            backlog=settings.listen_backlog,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        self.server = uvicorn.Server(config)
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        """``http://host:port`` as bound (the real port when 0 was asked for)."""
        host, port = self.socket.getsockname()[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` or a stop signal."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving (from another thread) and wait until requests under way finish."""
        self.server.should_exit = True
        self._stopped.wait(SHUTDOWN_GRACE_S * 4)

    def server_close(self) -> None:
        """Close the socket and stop the inference thread."""
        self.socket.close()
        self.worker.shutdown(wait=False, cancel_futures=True)


def _bind(settings: EndpointSettings) -> socket.socket:
    """A listening socket on ``serving.host``:``serving.port``."""
    try:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(settings.listen_backlog)
    except OSError as exc:
        raise EndpointError(
            f"cannot listen on {settings.host}:{settings.port} ({exc}); choose another "
            "serving.port or --port, or stop what uses it"
        ) from exc
    return sock
