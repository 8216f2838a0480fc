"""``fractofl serve local`` over real HTTP: SageMaker's container contract and its errors."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fractofl.core.images.imageio import read_grayscale
from fractofl.core.trust.registry import MODEL_FILE, SIGNATURE_FILE, ModelRegistry
from fractofl.core.trust.signing import fingerprint, load_public_key
from tests.serving.conftest import (
    PublishedModel,
    RunningEndpoint,
    copy_registry,
    flip_a_byte,
    fractofl_command,
)
from tests.serving.test_inference import expected_probabilities

MIB = 1024 * 1024


def call(
    endpoint: RunningEndpoint,
    body: bytes | None,
    content_type: str = "image/png",
    path: str = "/invocations",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    key: bool = True,
) -> tuple[int, dict[str, Any], Any]:
    """One request; returns the status, the parsed JSON body and the reply's headers."""
    sent = {"Content-Type": content_type, **(headers or {})}
    if key:
        sent["X-Api-Key"] = endpoint.api_key
    request = urllib.request.Request(endpoint.url + path, body, sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read() or b"{}"), reply.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), error.headers


def test_ping_names_the_model_version(endpoint: RunningEndpoint, published: PublishedModel) -> None:
    # Execute
    status, answer, _ = call(endpoint, None, path="/ping", method="GET", key=False)
    # Assert
    assert (status, answer) == (
        200,
        {
            "status": "ok",
            "model_version": published.version,
            "classes": list(published.checkpoint.classes),
            "preprocessing": json.loads(json.dumps(published.checkpoint.preprocessing.to_dict())),
            "api_key_required": True,
            "max_payload_bytes": 6 * MIB,
        },
    )


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("gray.png", "image/png"),
        ("gray16.tif", "image/tiff"),
        ("rgba.png", "image/png"),
        ("gray.jpg", "application/x-image"),
        ("gray.npy", "application/x-npy"),
    ],
)
def test_images_get_the_training_paths_answer(
    endpoint: RunningEndpoint,
    published: PublishedModel,
    images: dict[str, Path],
    name: str,
    content_type: str,
) -> None:
    # Execute
    status, answer, headers = call(endpoint, images[name].read_bytes(), content_type)
    # Assert
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    expected_image = read_grayscale(images["gray.png" if name.endswith(".npy") else name])
    expected = expected_probabilities(published, expected_image)
    assert list(answer["probabilities"].values()) == pytest.approx(expected, abs=1e-5)
    assert answer["model_version"] == published.version
    assert answer["class"] in answer["probabilities"]
    # ... with where the model comes from, from its signed metadata
    meta = ModelRegistry(published.registry).metadata(published.version)
    assert answer["provenance"] == {
        "model_version": published.version,
        "run_id": meta.run_id,
        "round": meta.round,
        "created": meta.created,
        "contributors": None,  # published without them, as versions before them were
        "signer": fingerprint(load_public_key(published.public_key)),
        "signature_verified": True,
        "architecture": "small_cnn",
        "preprocessing": meta.preprocessing,
    }


BAD_INPUTS = [
    ("empty body", b"", "image/png", 400, "empty request body"),
    ("text", b"plain text, not an image", "text/plain", 415, "'text/plain' is not supported"),
    ("text as a PNG", b"plain text, not an image", "image/png", 400, "not a readable PNG"),
    ("truncated JPEG", "truncated.jpg", "image/jpeg", 400, "cannot decode pixels"),
    ("7 MiB body", b"\0" * (7 * MIB), "image/png", 413, "exceeds the limit of 6 MiB"),
    ("wrong content type", "gray.png", "application/json", 415, "is not supported"),
    ("object array", "object.npy", "application/x-npy", 400, "object arrays are refused"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_its_code_and_a_reason_and_the_next_request_succeeds(
    endpoint: RunningEndpoint,
    images: dict[str, Path],
    body: bytes | str,
    content_type: str,
    status: int,
    reason: str,
) -> None:
    # Prepare
    data = images[body].read_bytes() if isinstance(body, str) else body
    # Execute
    got_status, answer, headers = call(endpoint, data, content_type)
    next_status, _, _ = call(endpoint, images["gray.png"].read_bytes())
    # Assert
    assert (got_status, headers["Content-Type"]) == (status, "application/json")
    assert list(answer) == ["error"]
    assert reason in answer["error"]
    assert "Traceback" not in answer["error"]
    assert next_status == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Api-Key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Bearer {key}"}, 200),
        ({"X-Amzn-SageMaker-Custom-Attributes": "trace=1; api-key={key}"}, 200),
        ({"X-Api-Key": "{key}"}, 200),
    ],
)
def test_api_key_is_required_in_one_of_three_headers(
    endpoint: RunningEndpoint, images: dict[str, Path], headers: dict[str, str], status: int
) -> None:
    # Prepare
    filled = {k: v.format(key=endpoint.api_key) for k, v in headers.items()}
    # Execute
    got, answer, reply_headers = call(
        endpoint, images["gray.png"].read_bytes(), headers=filled, key=False
    )
    # Assert
    assert got == status
    assert ("error" in answer) == (status == 401)
    assert (reply_headers.get("WWW-Authenticate") == "Bearer") == (status == 401)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/invocations", 405),
        ("POST", "/ping", 405),
        ("POST", "/predict", 404),
        ("POST", "/endpoints/another/invocations", 404),
        ("DELETE", "/invocations", 405),
        ("HEAD", "/invocations", 405),
        ("OPTIONS", "/invocations", 405),
        ("PATCH", "/ping", 405),
        ("post", "/invocations", 405),  # methods are case-sensitive (RFC 9110)
    ],
)
def test_other_routes_and_methods_get_json_errors(
    endpoint: RunningEndpoint, images: dict[str, Path], method: str, path: str, status: int
) -> None:
    # Execute
    body = images["gray.png"].read_bytes() if method == "POST" else None
    got, answer, headers = call(endpoint, body, path=path, method=method)
    # Assert
    assert got == status
    assert method == "HEAD" or answer["error"]  # a HEAD answer has no body
    if status == 405:
        assert headers["Allow"] == ("GET, HEAD" if path == "/ping" else "POST")


def test_a_malformed_request_gets_json_and_the_server_keeps_serving(
    endpoint: RunningEndpoint, images: dict[str, Path]
) -> None:
    # Prepare
    address = urlsplit(endpoint.url)
    # Execute
    with socket.create_connection((address.hostname, address.port), timeout=10) as raw:
        # headers over the limit that never end: refused without waiting for the rest
        raw.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000)
        reply = b""
        with contextlib.suppress(ConnectionResetError):  # it closes with our bytes unread
            while chunk := raw.recv(4096):
                reply += chunk
    # Assert
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert "error" in json.loads(body)
    assert call(endpoint, images["gray.png"].read_bytes())[0] == 200


def test_concurrent_requests_are_all_served(
    endpoint: RunningEndpoint, images: dict[str, Path]
) -> None:
    # Prepare: 8 clients released at once
    clients = 8
    start = threading.Barrier(clients)
    statuses: list[int] = []

    def client(name: str) -> None:
        data = images[name].read_bytes()
        start.wait()
        statuses.append(
            call(endpoint, data, "image/tiff" if name.endswith(".tif") else "image/png")[0]
        )

    names = ["gray.png", "gray16.tif", "rgba.png", "gray16.png"] * (clients // 4)
    threads = [threading.Thread(target=client, args=(n,)) for n in names]
    # Execute
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # Assert
    assert statuses == [200] * clients


def test_each_request_is_logged_on_one_line(endpoint: RunningEndpoint) -> None:
    # Execute
    call(endpoint, None, path="/ping", method="GET", key=False)
    # Assert
    lines = endpoint.log.read_text().splitlines()
    assert any(line.startswith("GET /ping 200 ") and line.endswith(" ms") for line in lines)
    assert "Traceback" not in endpoint.log.read_text()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("weights", "weights changed after signing"),
        ("unsigned", "unsigned (no signature file)"),
    ],
)
def test_a_tampered_or_unsigned_model_is_refused_at_start(
    published: PublishedModel, tmp_path: Path, tamper: str, message: str
) -> None:
    # Prepare
    registry = copy_registry(published, tmp_path / "registry")
    version = registry / published.version
    if tamper == "weights":
        flip_a_byte(version / MODEL_FILE)
    else:
        (version / SIGNATURE_FILE).unlink()
    # Execute
    result = subprocess.run(
        fractofl_command("serve", "local", "--port", "0", *published.overrides(registry)),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    # Assert
    assert result.returncode == 1
    assert message in result.stderr
    assert "refusing" in result.stderr
    assert "Traceback" not in result.stderr
    assert "serving" not in result.stdout
