"""Part serving: latency and throughput of the local endpoint against the in-process
model forward.

In one run: a fresh model of the plan's architecture (224 x 224 grayscale input, 4
classes) is published to a signed registry of the part's own, and ``fractofl serve
local`` serves it in its own process. The benchmark process loads the very same artifact
in-process and interleaves, request by request,

  (1) the model forward: the network and softmax on the already preprocessed tensor,
  (2) the whole in-process pipeline: the artifact's ``transform_fn`` (PNG decoding,
      preprocessing, the model, the JSON answer),
  (3) one HTTP request to the endpoint (``POST /invocations``, keep-alive connection),

in alternating blocks, so that all three see the same machine state; then (4) the plan's
number of concurrent clients send requests at once, each on its own connection, for
throughput.
"""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from outcome import PartOutcome
from PIL import Image
from plan import Plan
from proc import Finished
from report import markdown_grid

from fractofl.core.config.run_config import ModelConfig, RunConfig
from fractofl.core.model.factory import checkpoint_for, model_for
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import create_key_pair, load_private_key, load_public_key
from fractofl.serving.artifact_loader import load_handlers
from fractofl.serving.decoding import decode_request
from fractofl.serving.serve_local import prepare_model_dir

IMAGE_SIZE = 224
WARMUP = 20
BLOCK = 20  # requests per path before switching to the next
PAUSE_S = 0.2  # between blocks
TARGET_RATIO = 1.2
BATCH_GOAL = 1.3  # #19: 8 clients with batching against one client, on 2 cores
VARIANTS = {
    "single": ["serving.max_batch=1"],
    "wait": ["serving.max_batch_wait_ms=5"],
}
"""Endpoints the concurrent load also runs against, beside the defaults ("batched")."""
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Latencies:
    """Seconds per request."""

    samples: list[float]

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100), linear interpolation."""
        return float(np.percentile(self.samples, q))

    @property
    def mean(self) -> float:
        """Arithmetic mean."""
        return statistics.fmean(self.samples)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request_png(seed: int = 0) -> bytes:
    """A 224 x 224 8-bit grayscale PNG with some texture."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(128, 40, (IMAGE_SIZE, IMAGE_SIZE)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def publish_model(
    work: Path, model_name: str, image_size: int = IMAGE_SIZE, pixel_size_um: float = 0.0
) -> tuple[list[str], ModelRegistry]:
    """A signed registry version of a fresh ``model_name`` (of physical scale when
    ``pixel_size_um`` > 0); the Hydra overrides that point ``fractofl serve local`` at it."""
    keys = work / "keys"
    create_key_pair(keys / "bench.key", keys / "bench.pub", None)
    model = ModelConfig(name=model_name, image_size=image_size, pixel_size_um=pixel_size_um)
    cfg = RunConfig(model=model)
    torch.manual_seed(0)
    checkpoint = checkpoint_for(cfg, model_for(cfg).state_dict(), 1, "bench-serving", {})
    registry = ModelRegistry(work / "registry")
    registry.publish(
        checkpoint,
        config_digest="bench",
        parent=None,
        key=load_private_key(keys / "bench.key", None),
    )
    overrides = [
        f"registry.root={work / 'registry'}",
        f"registry.trusted_public_key={keys / 'bench.pub'}",
        "serving.rate_limit_per_minute=0",  # one client measuring, not one to throttle
    ]
    return overrides, registry


def start_endpoint(overrides: Sequence[str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``fractofl serve local`` in its own process, once ``/ping`` answers."""
    command = [
        str(Path(sys.executable).with_name("fractofl")),
        "serve",
        "local",
        "latest",
        *overrides,
        "--port",
        str(port),
    ]
    log = open(log_path, "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the endpoint exited ({process.returncode}); see {log_path}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                connection.close()
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the endpoint did not answer /ping in {START_TIMEOUT_S:.0f} s")


class Client:
    """One keep-alive HTTP connection to the endpoint."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def invoke(self, body: bytes) -> dict[str, object]:
        """POST /invocations; the JSON answer (raises on any other status)."""
        self.connection.request(
            "POST", "/invocations", body=body, headers={"Content-Type": "image/png"}
        )
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"endpoint answered {response.status}: {payload[:200]!r}")
        return dict(json.loads(payload))


def timed(call: Callable[[], object]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def interleaved(paths: dict[str, Callable[[], object]], requests: int) -> dict[str, Latencies]:
    """Each path ``WARMUP`` times, then the paths in turn, ``BLOCK`` requests at a time,
    until each has ``requests``. Blocks (not single requests) and a pause between them keep
    one path's CPU threads, still spinning after their last call, out of the next path's
    timings: on a 2-core machine the in-process forward's OpenMP threads would otherwise
    compete with the endpoint process's."""
    for call in paths.values():
        for _ in range(WARMUP):
            call()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    while min(len(values) for values in samples.values()) < requests:
        for name, call in paths.items():
            time.sleep(PAUSE_S)
            samples[name] += [timed(call) for _ in range(min(BLOCK, requests - len(samples[name])))]
    return {name: Latencies(values) for name, values in samples.items()}


def concurrent_load(port: int, body: bytes, clients: int, requests: int) -> tuple[float, Latencies]:
    """``clients`` threads each send ``requests // clients`` requests on their own
    connection; requests per second over the whole load, and their latencies."""
    per_client = max(1, requests // clients)
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        client = Client(port)
        mine = []
        try:
            for _ in range(per_client):
                mine.append(timed(lambda: client.invoke(body)))
        except BaseException as exc:  # reported after the join
            failures.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} client(s) failed: {failures[0]}")
    return len(latencies) / elapsed, Latencies(latencies)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def tables(
    model: str,
    requests: int,
    clients: int,
    results: dict[str, Latencies],
    loads: dict[str, tuple[float, Latencies]],
) -> list[str]:
    """The latency table with its target line, and the load table (with and without
    micro-batching, each against one client's sequential rate)."""
    forward = results["forward"]
    rows = []
    labels = {
        "forward": "(1) in-process model forward (network + softmax, preprocessed tensor)",
        "pipeline": "(2) in-process transform_fn (PNG in, JSON out)",
        "http": "(3) local endpoint, POST /invocations over HTTP (keep-alive)",
    }
    for name, label in labels.items():
        lat = results[name]
        rows.append(
            [
                label,
                _ms(lat.percentile(50)),
                _ms(lat.percentile(99)),
                f"{lat.percentile(50) / forward.percentile(50):.2f}x",
                f"{lat.percentile(99) / forward.percentile(99):.2f}x",
            ]
        )
    ratio = results["http"].percentile(50) / forward.percentile(50)
    met = "met" if ratio <= TARGET_RATIO else "NOT met"
    sequential = 1 / results["http"].mean
    latency = "\n\n".join(
        [
            f"Model `{model}` (fresh weights), one {IMAGE_SIZE} x {IMAGE_SIZE} 8-bit grayscale "
            f"PNG per request; {requests} requests per path after {WARMUP} warm-up requests, "
            f"the three paths alternating in blocks of {BLOCK} (with a {PAUSE_S} s pause) in "
            "one run.",
            markdown_grid(["Path", "p50 ms", "p99 ms", "p50 / (1)", "p99 / (1)"], rows),
            f"Target (3) p50 at most {TARGET_RATIO}x (1): **{met}** ({ratio:.2f}x).",
        ]
    )
    rows = [
        [
            "1 client, sequential (from (3))",
            f"{sequential:.1f}",
            "1.00x",
            _ms(results["http"].percentile(50)),
            _ms(results["http"].percentile(99)),
        ]
    ]
    labels = {
        "single": f"{clients} concurrent clients, one request per forward (serving.max_batch=1)",
        "batched": f"{clients} concurrent clients, micro-batching, the defaults "
        "(serving.max_batch=8, max_batch_wait_ms=0)",
        "wait": f"{clients} concurrent clients, micro-batching waiting up to 5 ms for more "
        "under load (serving.max_batch_wait_ms=5)",
    }
    for name, label in labels.items():
        rate, latencies = loads[name]
        rows.append(
            [
                label,
                f"{rate:.1f}",
                f"{rate / sequential:.2f}x",
                _ms(latencies.percentile(50)),
                _ms(latencies.percentile(99)),
            ]
        )
    ratio = loads["batched"][0] / sequential
    goal = "met" if ratio >= BATCH_GOAL else "NOT met"
    load = "\n\n".join(
        [
            markdown_grid(["Load", "Requests/s", "/ 1 client", "p50 ms", "p99 ms"], rows),
            f"Goal: {clients} clients with batching at least {BATCH_GOAL}x one client: "
            f"**{goal}** ({ratio:.2f}x).",
        ]
    )
    return [latency, load]


NOTE = (
    "The endpoint is `fractofl serve local` in its own process (torch's default threads), "
    "answering every request on one inference thread; the benchmark process holds the same "
    "artifact loaded in-process through the artifact's own `code/inference.py`. (3) includes "
    "HTTP parsing, PNG decoding, preprocessing, JSON encoding and the loopback round trip. "
    "With 8 clients the requests queue for the inference thread, whose forward already uses "
    "both cores; with micro-batching the thread answers the requests waiting when it becomes "
    "free with one forward (serving.max_batch=8), waiting up to serving.max_batch_wait_ms for "
    "more when the last batch held several."
)


def run_serving(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Publish a fresh model, serve it, time the three paths interleaved, then the load."""
    out = PartOutcome()
    sizes = plan.serving
    work = plan.fresh_dir("serving")
    overrides, registry = publish_model(work, sizes.model)
    trusted = load_public_key(work / "keys" / "bench.pub")
    handlers = load_handlers(prepare_model_dir(registry, "latest", trusted, work / "inprocess"))
    body = request_png()
    model = handlers.model
    data = decode_request(body, "image/png")
    batch = model.preprocessing.to_tensor(data)[None].to(model.device)

    def forward() -> object:
        with torch.inference_mode():
            return torch.softmax(model.network(batch).float(), dim=1)

    def pipeline() -> object:
        return handlers.transform_fn(model, body, "image/png", "application/json")

    port = free_port()
    log_path = work / "endpoint.log"
    started = time.monotonic()
    endpoint = start_endpoint(overrides, port, log_path)
    try:
        client = Client(port)
        answer = client.invoke(body)
        expected = json.loads(pipeline()[0])  # type: ignore[index]
        if answer["probabilities"] != expected["probabilities"]:
            raise RuntimeError("the endpoint and the in-process model disagree")
        print(f"    endpoint up on port {port}; {sizes.requests} requests per path ...", flush=True)
        results = interleaved(
            {"forward": forward, "pipeline": pipeline, "http": lambda: client.invoke(body)},
            sizes.requests,
        )
        print(f"    {sizes.concurrency} concurrent clients, batching ...", flush=True)
        loads = {"batched": concurrent_load(port, body, sizes.concurrency, sizes.requests * 2)}
    finally:
        stop(endpoint, started, log_path, out)
    # The same load on endpoints with other batch settings, in the same run.
    for name, setting in VARIANTS.items():
        port = free_port()
        log_path = work / f"endpoint-{name}.log"
        started = time.monotonic()
        endpoint = start_endpoint([*overrides, *setting], port, log_path)
        try:
            print(
                f"    {sizes.concurrency} concurrent clients, {' '.join(setting)} ...", flush=True
            )
            Client(port).invoke(body)
            loads[name] = concurrent_load(port, body, sizes.concurrency, sizes.requests * 2)
        finally:
            stop(endpoint, started, log_path, out)
    out.tables += tables(sizes.model, sizes.requests, sizes.concurrency, results, loads)
    out.notes.append(NOTE)
    out.data = {
        name: {"p50_s": lat.percentile(50), "p99_s": lat.percentile(99)}
        for name, lat in results.items()
    }
    for name, (rate, latencies) in loads.items():
        out.data[f"concurrent_{name}"] = {
            "clients": sizes.concurrency,
            "requests_per_s": rate,
            "p50_s": latencies.percentile(50),
            "p99_s": latencies.percentile(99),
        }
    return out


def stop(
    endpoint: subprocess.Popen[bytes], started: float, log_path: Path, out: PartOutcome
) -> None:
    """SIGTERM the endpoint and record it as the part's subprocess."""
    endpoint.send_signal(signal.SIGTERM)
    endpoint.wait(timeout=30)
    command = tuple(str(part) for part in endpoint.args)  # type: ignore[union-attr]
    finished = Finished(command, endpoint.returncode, time.monotonic() - started, log_path)
    out.record("fractofl serve local", finished, endpoint.returncode == 0)
