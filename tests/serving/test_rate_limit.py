"""Rate limiting and the web page's routes on an in-process local endpoint."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.artifact_loader import load_handlers
from fractofl.serving.client import EndpointClient
from fractofl.serving.errors import EndpointError
from fractofl.serving.local_endpoint import EndpointSettings, LocalEndpoint
from fractofl.serving.rate_limit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_the_rate_and_clients_are_counted_apart() -> None:
    # Prepare: 3 at once, then one every 2 s
    clock = FakeClock()
    limiter = RateLimiter(per_minute=30, burst=3, clock=clock)
    # Execute
    burst = [limiter.acquire("10.0.0.1") for _ in range(4)]
    other = limiter.acquire("10.0.0.2")
    clock.now += 1.0
    half_refilled = limiter.acquire("10.0.0.1")
    clock.now += 1.0
    refilled = limiter.acquire("10.0.0.1")
    # Assert
    assert burst[:3] == [0.0, 0.0, 0.0] and burst[3] == pytest.approx(2.0)
    assert other == 0.0
    assert half_refilled == pytest.approx(1.0)  # a refusal takes no token
    assert refilled == 0.0


def test_idle_clients_are_forgotten_and_zero_turns_limiting_off() -> None:
    # Prepare
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    off = RateLimiter(per_minute=0, burst=0, clock=clock)
    # Execute
    limiter.acquire("a")
    clock.now += 2.0  # a full refill
    limiter.acquire("b")
    # Assert
    assert set(limiter._buckets) == {"b"}
    assert not off.enabled and all(off.acquire("a") == 0.0 for _ in range(1000))
    assert RateLimiter.retry_after_header(0.2) == "1"
    assert RateLimiter.retry_after_header(2.01) == "3"


def test_a_burst_below_one_is_refused_with_the_setting_named() -> None:
    # Execute / Assert
    with pytest.raises(EndpointError, match=r"serving.rate_limit_burst=0 must be >= 1"):
        EndpointSettings.from_config(ServingConfig(rate_limit_burst=0), None)


@contextmanager
def serving(model_dir: Path, **settings: Any) -> Iterator[str]:
    """An in-process endpoint on a free port; yields its URL."""
    config = ServingConfig(port=0, **settings)
    endpoint = LocalEndpoint(
        load_handlers(model_dir), EndpointSettings.from_config(config, "the-key")
    )
    thread = threading.Thread(target=endpoint.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint.url
    finally:
        endpoint.shutdown()
        endpoint.server_close()
        thread.join(timeout=10)


def request(url: str, body: bytes | None = None, key: str = "the-key") -> tuple[int, Any, Any]:
    """A request; the status, the body (JSON parsed when it is JSON) and the headers."""
    headers = {"Content-Type": "image/png", "X-Api-Key": key}
    call = urllib.request.Request(url, body, headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(call, timeout=60) as reply:
            status, payload, reply_headers = reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as error:
        status, payload, reply_headers = error.code, error.read(), error.headers
    is_json = reply_headers.get("Content-Type", "").startswith("application/json")
    return status, json.loads(payload) if is_json else payload, reply_headers


def test_a_client_over_its_rate_gets_429_with_retry_after_even_without_the_key(
    model_dir: Path, images: dict[str, Path]
) -> None:
    # Prepare
    body = images["gray.png"].read_bytes()
    with serving(model_dir, rate_limit_per_minute=6, rate_limit_burst=2) as url:
        # Execute: two allowed, then refused; guessing keys is limited as well
        first = request(url + "/invocations", body)
        wrong_key = request(url + "/invocations", body, key="guess")
        refused = request(url + "/invocations", body)
        still_refused = request(url + "/endpoints/fractofl/invocations", body, key="guess")
        ping = request(url + "/ping")
    # Assert
    assert first[0] == 200 and wrong_key[0] == 401
    status, answer, headers = refused
    assert status == 429 and headers["Retry-After"] in {"9", "10"}
    assert "serving.rate_limit_per_minute=6" in answer["error"]
    assert still_refused[0] == 429
    assert still_refused[2]["x-amzn-ErrorType"] == "ThrottlingException"
    assert ping[0] == 200  # health checks are never limited


def test_the_page_is_served_with_a_strict_policy_and_can_be_turned_off(model_dir: Path) -> None:
    # Execute
    with serving(model_dir) as url:
        page = request(url + "/")
        script = request(url + "/web/app.js")
        missing = request(url + "/web/missing.js")
    with serving(model_dir, web_page=False) as url:
        off = request(url + "/")
    # Assert
    assert page[0] == 200 and page[2]["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script src="/web/app.js"' in page[1]
    policy = page[2]["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http" not in policy  # nothing from another host, so the page works offline
    assert script[0] == 200 and script[2]["Content-Type"].startswith("text/javascript")
    assert b"/invocations" in script[1]
    assert missing[0] == 404 and off[0] == 404


def test_the_python_client_waits_out_a_429_and_gives_up_when_told_to(
    model_dir: Path, images: dict[str, Path]
) -> None:
    # Prepare: one request at once, then one a second
    with serving(model_dir, rate_limit_per_minute=60, rate_limit_burst=1) as url:
        patient = EndpointClient(url, api_key="the-key")
        impatient = EndpointClient(url, api_key="the-key", busy_retries=0)
        # Execute
        first = patient.predict(images["gray.png"])
        start = time.monotonic()
        second = patient.predict(images["gray.png"])
        waited_s = time.monotonic() - start
        with pytest.raises(EndpointError, match=r"answered 429: too many requests"):
            impatient.predict(images["gray.png"])
    # Assert
    assert second == first
    assert waited_s >= 0.9  # it slept the Retry-After of 1 s
