"""The front's cost per request, measured without the rest of a round.

A round's time is dominated by ClientApp start-up and training, whose run-to-run noise is
larger than the front's cost. This times what the front adds to the two kinds of request a
round is made of: one of Flower's 5 MiB array pieces, and a small message (most of a
round's requests are objects of a few hundred bytes). The same POST to the Fleet API's
``push-object`` goes to the SuperLink directly and through the front, alternating, each
over a kept-alive TLS connection (as a SuperNode's HTTP client holds one). The SuperLink
reads the whole body and refuses it (400, not a protobuf message), so the time is
transfer, TLS and the proxy, not Flower's object store.
"""

from __future__ import annotations

import http.client
import ssl
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

PIECE_BYTES = 5 << 20  # Flower's FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
SMALL_BYTES = 300  # a typical small object or message of a round
PATH = "/v1/fleet/push-object"


@dataclass(frozen=True)
class RequestTimes:
    """Median seconds of one POST of ``size`` bytes, direct and through the front."""

    size: int
    direct_s: float
    front_s: float
    samples: int

    @property
    def added_s(self) -> float:
        return self.front_s - self.direct_s


def time_requests(direct_port: int, front_port: int, ca: Path, samples: int) -> list[RequestTimes]:
    """Small and piece-sized POSTs, ``samples`` of each on each path, interleaved."""
    context = ssl.create_default_context(cafile=str(ca))
    connections = {
        port: http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=context)
        for port in (direct_port, front_port)
    }
    try:
        return [
            _time_size(connections, size, samples, direct_port, front_port)
            for size in (SMALL_BYTES, PIECE_BYTES)
        ]
    finally:
        for connection in connections.values():
            connection.close()


def _time_size(
    connections: dict[int, http.client.HTTPSConnection],
    size: int,
    samples: int,
    direct_port: int,
    front_port: int,
) -> RequestTimes:
    body = bytes(size)  # zeros: field number 0 fails protobuf parsing at once
    times: dict[int, list[float]] = {port: [] for port in connections}
    for _ in range(samples):
        for port, connection in connections.items():
            started = time.perf_counter()
            connection.request(
                "POST", PATH, body=body, headers={"Content-Type": "application/protobuf"}
            )
            response = connection.getresponse()
            response.read()
            times[port].append(time.perf_counter() - started)
            if response.status != 400:
                raise RuntimeError(f"port {port} answered {response.status}, expected 400")
    return RequestTimes(
        size, statistics.median(times[direct_port]), statistics.median(times[front_port]), samples
    )
