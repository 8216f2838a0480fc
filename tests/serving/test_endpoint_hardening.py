"""The local endpoint tried as an attacker would: each defect found by sending ~11,000
malformed requests to the hand-written server, against the uvicorn/Starlette one.

In-process endpoints on free ports serve the session's real artifact; raw sockets send
what no HTTP client library would.
"""

from __future__ import annotations

import io
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.artifact_loader import load_handlers
from fractofl.serving.client import EndpointClient
from fractofl.serving.errors import EndpointError
from fractofl.serving.local_endpoint import EndpointSettings, LocalEndpoint, inference_worker
from fractofl.serving.serve_local import prepare_model_dir
from tests.serving.conftest import PublishedModel

ENDPOINT_LOG = "fractofl.serving.local_endpoint"


@contextmanager
def serving(
    model_dir: Path, worker: ThreadPoolExecutor | None = None, **settings: Any
) -> Iterator[tuple[str, int]]:
    """An in-process endpoint without key or rate limit; yields its (host, port)."""
    config = ServingConfig(port=0, rate_limit_per_minute=0, web_page=False, **settings)
    worker = worker or inference_worker()
    handlers = worker.submit(load_handlers, model_dir).result()
    endpoint = LocalEndpoint(handlers, EndpointSettings.from_config(config, None), worker)
    thread = threading.Thread(target=endpoint.serve_forever, daemon=True)
    thread.start()
    try:
        address = urlsplit(endpoint.url)
        assert address.hostname is not None and address.port is not None
        yield address.hostname, address.port
    finally:
        endpoint.shutdown()
        endpoint.server_close()
        thread.join(timeout=30)


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends on ``connection`` until it closes it (one ``recv`` may
    return the head of a reply without its body)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass  # what came before the reset or the silence is the answer
    return received


def exchange(address: tuple[str, int], raw: bytes, timeout: float = 30) -> bytes:
    """Send ``raw`` on a new connection; everything the server sends until it closes."""
    with socket.create_connection(address, timeout=timeout) as connection:
        connection.sendall(raw)
        return read_until_closed(connection)


def responses(received: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in a byte stream: status, headers (lower-cased) and body."""
    parsed = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", "0"))
        parsed.append((int(lines[0].split()[1]), headers, rest[:length]))
        received = rest[length:]
    return parsed


def post(path: str, body: bytes, content_type: str = "image/png", **headers: str) -> bytes:
    """A POST request's bytes (``Connection: close``: the answer ends the exchange)."""
    headers = {"Connection": "close", **headers}
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "length",
    ["+14630", "1_4630", "-5", "0x10", "5, 6"],
    ids=["plus", "underscore", "neg", "hex", "two"],
)
def test_a_malformed_content_length_is_refused_and_nothing_after_it_is_answered(
    model_dir: Path, length: str
) -> None:
    # Prepare: a second request hidden behind the first, as a smuggler behind a proxy
    smuggled = b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"
    raw = (
        f"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n".encode()
        + smuggled
    )
    with serving(model_dir) as address:
        # Execute
        replies = responses(exchange(address, raw))
    # Assert: one 400 with a JSON reason, then the connection closed
    assert [status for status, _, _ in replies] == [400]
    _, headers, body = replies[0]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body)["error"].startswith("malformed HTTP request")


def test_an_image_of_few_pixels_but_extreme_shape_is_refused_before_decoding(
    model_dir: Path,
) -> None:
    # Prepare: a 49,000,000 x 1 PNG of a few KB was legal by pixel count and its resize
    # took 13 GiB; a few-KB JPEG claiming 7000 x 7000 was decoded in full
    cases = [(png(49_000_000, 1), "image/png"), (png(10_000, 100), "image/png")]
    too_many = io.BytesIO()
    Image.new("L", (7000, 7000), 90).save(too_many, format="JPEG", quality=5)
    cases += [(too_many.getvalue(), "image/jpeg"), (png(40, 20_000), "image/png")]
    cases.append((png(64, 48), "image/png"))
    with serving(model_dir) as address:
        # Execute
        replies = [
            responses(exchange(address, post("/invocations", body, kind)))[0]
            for body, kind in cases
        ]
    # Assert
    reasons = [json.loads(body).get("error", "") for _, _, body in replies]
    assert [status for status, _, _ in replies] == [400, 400, 400, 400, 200]
    assert "49000000x1 = 49000000 pixels, above the limit of 25000000" in reasons[0]
    assert "10000x100, 100 times longer than wide, above the limit of 16" in reasons[1]
    assert "7000x7000 = 49000000 pixels, above the limit of 25000000" in reasons[2]
    assert "40x20000, a side above the limit of 16384" in reasons[3]


def test_bounds_come_from_the_serving_settings(published: PublishedModel, tmp_path: Path) -> None:
    # Prepare: an artifact packaged with smaller bounds, as `serve local` packages it
    from fractofl.core.images.imageio import ImageBounds
    from fractofl.core.trust.registry import ModelRegistry
    from fractofl.core.trust.signing import load_public_key

    model_dir = prepare_model_dir(
        ModelRegistry(published.registry),
        "latest",
        load_public_key(published.public_key),
        tmp_path,
        image_bounds=ImageBounds(10_000, 200, 2.0),
    )
    with serving(model_dir) as address:
        # Execute
        wide = responses(exchange(address, post("/invocations", png(90, 30))))[0]
        large = responses(exchange(address, post("/invocations", png(150, 150))))[0]
        fits = responses(exchange(address, post("/invocations", png(60, 40))))[0]
    # Assert
    assert wide[0] == 400 and "above the limit of 2" in json.loads(wide[2])["error"]
    assert large[0] == 400 and "above the limit of 10000" in json.loads(large[2])["error"]
    assert fits[0] == 200


def test_a_request_that_waits_too_long_for_the_model_gets_503_with_retry_after(
    model_dir: Path,
) -> None:
    # Prepare: the inference thread held by earlier work
    worker = inference_worker()
    release = threading.Event()
    with serving(model_dir, worker, max_queue_wait_s=0.5, max_concurrent=2) as address:
        worker.submit(release.wait, 60)
        try:
            # Execute
            start = time.monotonic()
            waited = responses(exchange(address, post("/invocations", png(64, 48))))[0]
            waited_s = time.monotonic() - start
        finally:
            release.set()
        after = responses(exchange(address, post("/invocations", png(64, 48))))[0]
    # Assert: refused after its wait, not queued behind the work for a minute
    status, headers, body = waited
    assert status == 503 and headers["retry-after"] == "1"
    assert "serving.max_queue_wait_s" in json.loads(body)["error"]
    assert waited_s < 30
    assert after[0] == 200


def test_the_python_client_waits_out_a_busy_model(model_dir: Path) -> None:
    # Prepare: the inference thread held; a request may wait 0.3 s for it
    worker = inference_worker()
    release = threading.Event()
    with serving(model_dir, worker, max_queue_wait_s=0.3) as (host, port):
        worker.submit(release.wait, 60)
        client = EndpointClient(f"http://{host}:{port}")
        impatient = EndpointClient(f"http://{host}:{port}", busy_retries=0)
        # Execute: refused while held; then the thread is freed 0.5 s later
        with pytest.raises(EndpointError, match=r"answered 503: the model stayed busy"):
            impatient.predict(png(64, 48), "image/png")
        threading.Timer(0.5, release.set).start()
        answer = client.predict(png(64, 48), "image/png")  # 503, Retry-After 1, then 200
    # Assert
    assert answer.label in answer.probabilities


def test_a_client_that_trickles_its_request_is_cut_off_at_the_deadline(model_dir: Path) -> None:
    # Prepare: one byte every 0.2 s would have reset the old per-read timeout forever
    trickle = b"POST /invocations HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 200
    with (
        serving(model_dir, request_timeout_s=1.0) as address,
        socket.create_connection(address, timeout=30) as connection,
    ):
        start = time.monotonic()
        # Execute: trickle until the server answers
        for byte in trickle:
            if select.select([connection], [], [], 0.2)[0]:
                break
            connection.sendall(bytes([byte]))
        received = read_until_closed(connection)
        elapsed = time.monotonic() - start
    # Assert: answered 408 and closed long before the 40 s of trickling ended
    (status, headers, body), *_ = responses(received)
    assert status == 408 and headers["connection"] == "close"
    assert "serving.request_timeout_s" in json.loads(body)["error"]
    assert elapsed < 30


def test_connections_over_the_cap_are_refused_at_once(model_dir: Path) -> None:
    # Prepare: two idle connections hold the cap
    with serving(model_dir, max_connections=2) as address:
        held = [socket.create_connection(address, timeout=30) for _ in range(2)]
        try:
            # Execute
            refused = responses(exchange(address, b""))
            for connection in held:
                connection.close()
            # the server notices the closed connections; then it serves again
            deadline = time.monotonic() + 30
            served: list[Any] = []
            while time.monotonic() < deadline:
                served = responses(
                    exchange(address, b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                )
                if served and served[0][0] == 200:
                    break
        finally:
            for connection in held:
                connection.close()
    # Assert
    status, headers, body = refused[0]
    assert status == 503 and headers["retry-after"] == "1"
    assert "serving.max_connections=2" in json.loads(body)["error"]
    assert served[0][0] == 200


def test_client_bytes_reach_the_log_escaped(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a terminal escape sequence, percent-encoded in the path and raw in the line
    with caplog.at_level(logging.INFO, logger=ENDPOINT_LOG), serving(model_dir) as address:
        # Execute
        routed = responses(
            exchange(
                address, b"GET /%1b[2J%1b[31mred HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
        )
        raw = responses(exchange(address, b"GET /\x1b[2J HTTP/1.1\r\nHost: t\r\n\r\n"))
    # Assert
    assert routed[0][0] == 404 and raw[0][0] == 400
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "\x1b" not in text
    assert "GET /\\x1b[2J\\x1b[31mred 404" in text


def test_a_small_refused_body_is_drained_and_a_large_one_is_not(model_dir: Path) -> None:
    # Prepare: a request refused before its body is read (no such endpoint name)
    small = post("/endpoints/other/invocations", b"x" * 1_000_000)
    with serving(model_dir, max_payload_mb=1) as address:
        # Execute: the client sends its whole body and then reads; it gets the reply
        small_reply = responses(exchange(address, small))
        with socket.create_connection(address, timeout=30) as connection:
            connection.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                b"Content-Length: 999999999\r\n\r\n"
            )
            large_reply = responses(read_until_closed(connection))
    # Assert
    assert small_reply[0][0] == 404
    assert "no endpoint 'other' here" in json.loads(small_reply[0][2])["error"]
    status, headers, body = large_reply[0]
    assert status == 413 and headers["connection"] == "close"
    assert "999999999 bytes exceeds the limit of 1 MiB" in json.loads(body)["error"]


def test_many_malformed_requests_leave_the_endpoint_serving(model_dir: Path) -> None:
    # Prepare: a seeded fuzz of request lines, headers and bodies
    rng = np.random.default_rng(0)
    pieces = [
        b"GET", b"POST", b"get", b"HEAD", b"/invocations", b"/ping", b"/%00", b"HTTP/1.1",
        b"HTTP/9.9", b"\r\n", b"Host: t", b"Content-Length: 3", b"Transfer-Encoding: chunked",
        b"Content-Type: image/png", b" ", b"\x00", b"\xff", b":", b"0\r\n\r\n", b"abc",
    ]  # fmt: skip
    statuses: set[int] = set()
    with serving(model_dir) as address:
        for _ in range(200):
            # Execute
            raw = b"".join(pieces[i] for i in rng.integers(0, len(pieces), rng.integers(1, 14)))
            raw += b"\r\nConnection: close\r\n\r\n"  # a valid request ends the exchange too
            for status, _, _ in responses(exchange(address, raw, timeout=10)):
                statuses.add(status)
        alive = responses(exchange(address, post("/invocations", png(64, 48))))
    # Assert: only 4xx refusals (and answers), never a 500, and it still answers
    assert statuses and all(status < 500 for status in statuses)
    assert alive[0][0] == 200
