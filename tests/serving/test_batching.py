"""Micro-batching on the local endpoint's inference thread: requests that wait together
are answered with one forward, and each gets the answer it would get alone."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fractofl.core.config.run_config import ServingConfig
from fractofl.serving.artifact_loader import load_handlers
from fractofl.serving.local_endpoint import EndpointSettings, LocalEndpoint, inference_worker
from fractofl.serving.request_errors import RequestError

NAMES = ["gray.png", "gray16.tif", "rgba.png", "gray16.png", "gray.jpg", "gray.npy"]
TYPES = {
    ".png": "image/png",
    ".tif": "image/tiff",
    ".jpg": "image/jpeg",
    ".npy": "application/x-npy",
}


@contextmanager
def held_endpoint(
    model_dir: Path, **settings: object
) -> Iterator[tuple[LocalEndpoint, threading.Event]]:
    """An in-process endpoint whose inference thread is held until the event is set, so
    that the requests sent meanwhile wait together."""
    config = ServingConfig(port=0, rate_limit_per_minute=0, web_page=False, **settings)  # type: ignore[arg-type]
    worker = inference_worker()
    handlers = worker.submit(load_handlers, model_dir).result()
    endpoint = LocalEndpoint(handlers, EndpointSettings.from_config(config, None), worker)
    release = threading.Event()
    worker.submit(release.wait, 60)
    thread = threading.Thread(target=endpoint.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint, release
    finally:
        release.set()
        endpoint.shutdown()
        endpoint.server_close()
        thread.join(timeout=30)


def post(url: str, path: Path) -> dict[str, object]:
    request = urllib.request.Request(
        url + "/invocations", path.read_bytes(), {"Content-Type": TYPES[path.suffix]}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return dict(json.loads(reply.read()))


@pytest.mark.parametrize("max_batch", [8, 1])
def test_requests_that_wait_together_get_the_answers_they_get_alone(
    model_dir: Path, images: dict[str, Path], max_batch: int
) -> None:
    # Prepare: each image's answer alone, in process
    handlers = load_handlers(model_dir)
    alone = {
        name: json.loads(
            handlers.transform_fn(
                handlers.model, images[name].read_bytes(), TYPES[images[name].suffix], None
            )[0]
        )
        for name in NAMES
    }
    answers: dict[str, dict[str, object]] = {}
    with held_endpoint(model_dir, max_batch=max_batch) as (endpoint, release):
        senders = [
            threading.Thread(
                target=lambda n=name: answers.__setitem__(n, post(endpoint.url, images[n]))
            )
            for name in NAMES
        ]
        for sender in senders:
            sender.start()
        # Execute: the thread is freed once all wait (the queue admitted them all)
        deadline = time.monotonic() + 60
        while endpoint.queue.admitted < len(NAMES) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert endpoint.queue.admitted == len(NAMES), "the requests did not all arrive"
        release.set()
        for sender in senders:
            sender.join(timeout=60)
        batches = list(endpoint.queue.batches)
    # Assert: batched as configured, and the same answers
    assert sum(batches) == len(NAMES)
    assert max(batches) == min(max_batch, len(NAMES))
    for name in NAMES:
        assert answers[name]["class"] == alone[name]["class"]
        got, expected = answers[name]["probabilities"], alone[name]["probabilities"]
        assert got == pytest.approx(expected, abs=1e-5)


def test_a_bad_request_in_a_batch_gets_its_own_error_and_the_others_their_answers(
    model_dir: Path, images: dict[str, Path]
) -> None:
    # Prepare
    handlers = load_handlers(model_dir)
    good = images["gray.png"].read_bytes()
    requests = [
        (good, "image/png", None),
        (b"not an image", "image/png", None),
        (good, "image/png", "text/csv"),
        (good, "text/plain", None),
        (good, "image/png; heatmap=true", "application/json"),
    ]
    # Execute
    results = handlers.transform_batch(handlers.model, requests)
    # Assert
    assert len(results) == len(requests)
    first, undecodable, unacceptable, unsupported, with_map = results
    assert isinstance(undecodable, RequestError) and undecodable.status_code == 400
    assert isinstance(unacceptable, RequestError) and unacceptable.status_code == 406
    assert isinstance(unsupported, RequestError) and unsupported.status_code == 415
    single = json.loads(handlers.transform_fn(handlers.model, good, "image/png", None)[0])
    assert json.loads(first[0])["probabilities"] == pytest.approx(single["probabilities"], abs=1e-5)
    assert "heatmap" in json.loads(with_map[0])
