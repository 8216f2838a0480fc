"""Part worst_request: memory and time of the worst request within the endpoint's limits.

The hand-written server took 13.2 GiB and minutes of its single inference thread for a
legal 47 KB PNG of 49,000,000 x 1 pixels, and a normal request behind it waited 216 s.
Here, for each case, a fresh ``fractofl serve local`` (ResNet-18 at 224 x 224, the
default ``serving.*`` bounds) first answers one normal request (warm), then gets the
case; 0.3 s later a normal 224 x 224 request is sent on another connection. Reported:
the case's status and time, the server's peak resident memory above what it held when
warm (VmHWM from /proc), and how long the normal request behind it took (or that it was
refused with 503 after ``serving.max_queue_wait_s``).
"""

from __future__ import annotations

import http.client
import io
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from outcome import PartOutcome
from PIL import Image
from plan import Plan
from proc import Finished
from report import markdown_grid

from parts.serving import free_port, publish_model, request_png, start_endpoint

MIB = 1024 * 1024
BEHIND_DELAY_S = 0.3


@dataclass(frozen=True)
class Case:
    """One request: what it is, its body and options."""

    name: str
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Measured:
    """What one case did to the server."""

    status: int
    seconds: float
    peak_extra_mib: float
    behind_status: int
    behind_seconds: float


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def gradient(width: int, height: int) -> np.ndarray:
    """A smooth 8-bit image: compresses to little, decodes to the full size."""
    row = (np.arange(width, dtype=np.float32) * 255 / max(1, width - 1)).astype(np.uint8)
    return np.broadcast_to(row, (height, width)).copy()


def cases() -> list[Case]:
    """The normal request, the attacker's two, and the largest legal shapes."""
    jpeg = io.BytesIO()
    Image.new("L", (7000, 7000), 90).save(jpeg, format="JPEG", quality=5)
    heavy = "image/png; heatmap=true; preview=true"
    return [
        Case("224 x 224 PNG (a normal request)", request_png(), "image/png"),
        Case("49,000,000 x 1 PNG (the attacker's)", png(gradient(49_000_000, 1)), "image/png"),
        Case("JPEG claiming 7000 x 7000", jpeg.getvalue(), "image/jpeg"),
        Case("5000 x 5000 PNG (pixel bound), heat map + preview", png(gradient(5000, 5000)), heavy),
        Case(
            "16384 x 1024 PNG (side and aspect bounds), heat map + preview",
            png(gradient(16384, 1024)),
            heavy,
        ),
    ]


def post(port: int, case: Case) -> tuple[int, float]:
    """Send one request on its own connection; its status and seconds."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(
            "POST", "/invocations", body=case.body, headers={"Content-Type": case.content_type}
        )
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def measure(overrides: list[str], case: Case, work: Path, out: PartOutcome) -> Measured:
    """A fresh endpoint: warm it, send the case and a normal request behind it."""
    port = free_port()
    log_path = work / f"endpoint-{port}.log"
    started = time.monotonic()
    endpoint = start_endpoint(overrides, port, log_path)
    normal = Case("normal", request_png(1), "image/png")
    try:
        post(port, normal)
        warm = peak_rss(endpoint.pid)
        behind: list[tuple[int, float]] = []

        def send_behind() -> None:
            time.sleep(BEHIND_DELAY_S)
            behind.append(post(port, normal))

        thread = threading.Thread(target=send_behind)
        thread.start()
        status, seconds = post(port, case)
        thread.join()
        extra = (peak_rss(endpoint.pid) - warm) / MIB
    finally:
        endpoint.send_signal(signal.SIGTERM)
        endpoint.wait(timeout=60)
        command = tuple(str(part) for part in endpoint.args)  # type: ignore[union-attr]
        finished = Finished(command, endpoint.returncode, time.monotonic() - started, log_path)
        out.record("fractofl serve local", finished, endpoint.returncode == 0)
    return Measured(status, seconds, extra, *behind[0])


def run_worst_request(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Each case against a fresh endpoint; one table."""
    out = PartOutcome()
    work = plan.fresh_dir("worst_request")
    overrides, _ = publish_model(work, "resnet18")
    rows = []
    for case in cases():
        print(f"    {case.name} ({len(case.body)} bytes) ...", flush=True)
        result = measure(overrides, case, work, out)
        rows.append(
            [
                case.name,
                f"{len(case.body) / 1024:.0f}",
                str(result.status),
                f"{result.seconds:.2f}",
                f"{result.peak_extra_mib:.0f}",
                f"{result.behind_status} in {result.behind_seconds:.2f} s",
            ]
        )
        out.data[case.name] = {
            "bytes": len(case.body),
            "status": result.status,
            "seconds": result.seconds,
            "peak_extra_mib": result.peak_extra_mib,
            "behind_status": result.behind_status,
            "behind_seconds": result.behind_seconds,
        }
    out.tables.append(
        markdown_grid(
            [
                "request",
                "KiB sent",
                "status",
                "time (s)",
                "server peak RSS above warm (MiB)",
                "a normal request sent 0.3 s later",
            ],
            rows,
        )
    )
    out.notes.append(
        "Bounds: serving.max_image_pixels=25,000,000, max_image_side=16384, "
        "max_aspect_ratio=16 (refused from the header, before decoding); a request waits "
        "at most serving.max_queue_wait_s=30 s for the inference thread, then 503."
    )
    return out
