"""uvicorn's h11 protocol with the local endpoint's connection limits and JSON refusals.

uvicorn parses HTTP with h11, which already refuses what the hand-written server let
through (a ``Content-Length`` of ``+14630`` or ``1_4630``, a negative one, conflicting
ones) and closes the connection after such a refusal, so the bytes after it are never
read as a second request. This subclass adds what uvicorn leaves open:

- a deadline per request: from the connection's start (or the previous answer) until
  the request has been received whole, headers and body, ``request_timeout_s`` at most;
  a client that trickles bytes cannot reset it, as it reset the old 60 s socket timeout
  with every byte (slowloris). Its connection is answered 408 and closed;
- at most ``max_connections`` open connections: one more is answered 503 with
  ``Retry-After`` and closed at once, instead of holding a thread (the old server had
  one thread per connection, unbounded);
- every refusal at this layer as the endpoint's JSON error body, with h11's status
  (400, 431 for headers over the size limit, 501 for an unknown transfer coding), and a
  log line in which the client's bytes are escaped;
- a lingering close after such a refusal: the server stops writing, then reads and drops
  what the client still sends for ``LINGER_S`` before it closes, so that a client still
  sending sees the answer instead of a connection reset (RFC 9112, section 9.6).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("fractofl.serving.local_endpoint")
LINGER_S = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What a connection may take before it is refused."""

    request_timeout_s: float
    max_connections: int
    retry_after_s: int = 1


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """A :class:`GuardedH11Protocol` class bound to ``limits`` (uvicorn's ``http`` setting
    takes a class, which it instantiates per connection)."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def json_refusal(status: int, reason: str, **headers: str) -> bytes:
    """A complete HTTP/1.1 response with the JSON error body, closing the connection."""
    body = json.dumps({"error": reason}).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a per-request deadline, a connection cap and JSON
    refusals (see the module's docstring)."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._protocol_error: h11.RemoteProtocolError | None = None
        self._refused = False
        # h11 raises the parse error inside uvicorn's event loop, which keeps only a fixed
        # message; the wrapper keeps the error itself for the status and reason.
        next_event = self.conn.next_event

        def kept_next_event() -> Any:
            try:
                return next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = exc
                raise

        self.conn.next_event = kept_next_event  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning(
                "%s refused: %d connections open (serving.max_connections=%d)",
                self.client[0] if self.client else "-",
                len(self.connections) - 1,
                self.limits.max_connections,
            )
            self._refuse(
                503,
                "the endpoint is at its connection limit (serving.max_connections="
                f"{self.limits.max_connections}); retry shortly",
                Retry_After=str(self.limits.retry_after_s),
            )
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: read and dropped
        super().data_received(data)
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()  # the request is in whole (or refused): the answer is the app's

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse: the JSON error, h11's status, then close."""
        error = self._protocol_error
        status = error.error_status_hint if error is not None else 400
        reason = str(error) if error is not None and str(error) else msg
        log.info(
            "%s refused by the HTTP layer: %d %s",
            self.client[0] if self.client else "-",
            status,
            printable(reason),
        )
        self._refuse(status, f"malformed HTTP request: {reason}")

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.info(
            "%s dropped: request not received whole in %g s (serving.request_timeout_s)",
            self.client[0] if self.client else "-",
            self.limits.request_timeout_s,
        )
        answering = self.cycle is not None and not self.cycle.response_complete
        if answering and self.cycle.response_started:
            self.transport.close()  # an answer is under way; the app gets a disconnect
            return
        if answering:  # the app waits for the body: it is told the client went away
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._refuse(
            408,
            f"the request was not received whole within {self.limits.request_timeout_s:g} s "
            "(serving.request_timeout_s); send it at once",
        )

    def _refuse(self, status: int, reason: str, **headers: str) -> None:
        """Answer ``status`` and close, lingering (see the module's docstring)."""
        self._refused = True
        self._disarm()
        self.transport.write(json_refusal(status, reason, **headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def printable(text: str, limit: int = 300) -> str:
    """``text`` safe for a log line: control and non-ASCII characters escaped (a client's
    terminal escape sequences never reach an operator's terminal), at most ``limit``."""
    escaped = text.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."
