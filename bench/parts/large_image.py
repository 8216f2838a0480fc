"""Part large_image: a 24 MiB 16-bit SEM TIFF through an endpoint that takes 6 MiB.

A SageMaker real-time endpoint takes 6 MB a request. ``EndpointClient`` (what
``fractofl predict`` uses) brings an image over the limit to the model's scale itself and
sends it as float32 ``.npy``; when even that is over, it sends the evaluation tiles as one
mosaic and the mechanism map as pieces, which it joins. Here a physical-scale ResNet-18
(64-px tiles at 0.25 um per pixel) is served twice by ``fractofl serve local``: with
``serving.max_payload_mb=64`` (the image goes whole: the reference) and with the default
6 MiB. Two synthetic 4096 x 3072 FEI TIFFs: one at 0.0625 um per pixel (a quarter of the
model's: at its scale 1024 x 753, one request of 3 MB) and one at 0.25 um per pixel (the
model's own: 4096 x 3013 at its scale, 49 MB, so tiles). Reported for each route: bytes
sent, requests, seconds from the file to the answer (the client's decoding and resampling
included), the largest difference of a class probability from the reference's, and the
map's tiles and dominant class.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import numpy as np
from outcome import PartOutcome
from plan import Plan
from proc import Finished
from report import markdown_grid

from fractofl.core.images.sem_scale import read_sem_scale
from fractofl.core.synth.micrograph import MicrographSpec, write_micrograph
from fractofl.serving.client import EndpointClient, Prediction
from parts.serving import free_port, publish_model, start_endpoint

MIB = 1024 * 1024
MODEL_UM, TILE = 0.25, 64
WIDTH, HEIGHT = 4096, 3072
REFERENCE_DISPLAY_WIDTH_UM = 127_000.0  # core/synth/micrograph.py's magnification rule
LARGE_LIMIT_MB = 64


def micrograph(folder: Path, name: str, pixel_um: float) -> Path:
    """A 4096 x 3072 16-bit FEI TIFF of a ductile surface at ``pixel_um`` um per pixel."""
    path = folder / name
    magnification = REFERENCE_DISPLAY_WIDTH_UM / pixel_um / WIDTH
    spec = MicrographSpec(width=WIDTH, height=HEIGHT)
    write_micrograph(path, "ductile", magnification, "fei", np.random.default_rng(7), spec)
    return path


def timed(client: EndpointClient, path: Path) -> tuple[Prediction, float]:
    """The answer with its map, and the seconds from the file to it."""
    started = time.perf_counter()
    answer = client.predict(path, scale=read_sem_scale(path), mechanism_map=True)
    return answer, time.perf_counter() - started


def route_of(answer: Prediction) -> str:
    """How the client sent the image, in a few words."""
    if not answer.preparation:
        return "as it is"
    if "sent at the model's scale" in answer.preparation:
        return "at the model's scale (float32 .npy)"
    pieces = re.search(r"map joined from (\d+) pieces", answer.preparation)
    return f"evaluation tiles (1 request) + map in {pieces[1] if pieces else '?'} pieces"


class CountingClient(EndpointClient):
    """An ``EndpointClient`` that counts the requests and bytes it sends."""

    requests = 0
    sent = 0

    def _send(self, body: bytes, content_type: str) -> bytes:
        self.requests += 1
        self.sent += len(body)
        return super()._send(body, content_type)


def run_large_image(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Both images through both endpoints; one table."""
    out = PartOutcome()
    work = plan.fresh_dir("large_image")
    overrides, _ = publish_model(work, "resnet18", TILE, MODEL_UM)  # random weights
    images = {
        "4x finer than the model": micrograph(work, "fine.tif", MODEL_UM / 4),
        "at the model's scale": micrograph(work, "coarse.tif", MODEL_UM),
    }
    endpoints = {}
    started = time.monotonic()
    for name, limit in (("reference", LARGE_LIMIT_MB), ("6 MiB", 6)):
        port = free_port()
        log = work / f"endpoint-{name.replace(' ', '')}.log"
        process = start_endpoint([*overrides, f"serving.max_payload_mb={limit}"], port, log)
        endpoints[name] = (port, process, log)
    rows = []
    try:
        for label, path in images.items():
            reference: Prediction | None = None
            for name, (port, _, _) in endpoints.items():
                client = CountingClient(f"http://127.0.0.1:{port}", timeout_s=600)
                client.max_request_bytes()  # /ping before the clock starts
                answer, seconds = timed(client, path)
                if reference is None:
                    reference = answer
                found = answer.mechanism_map or {}
                delta = max(
                    abs(answer.probabilities[c] - reference.probabilities[c])
                    for c in reference.probabilities
                )
                route = route_of(answer)
                rows.append(
                    [
                        f"{label} ({path.stat().st_size / MIB:.1f} MiB)",
                        name,
                        route,
                        f"{client.sent / MIB:.1f}",
                        str(client.requests),
                        f"{seconds:.1f}",
                        f"{delta:.1e}",
                        f"{found.get('rows', 0) * found.get('cols', 0)}",
                        str(found.get("dominant", "")),
                    ]
                )
                out.data[f"{label} / {name}"] = {
                    "bytes_sent": client.sent,
                    "requests": client.requests,
                    "seconds": seconds,
                    "max_probability_difference": delta,
                    "map_tiles": found.get("rows", 0) * found.get("cols", 0),
                    "preparation": answer.preparation,
                }
                print(f"    {label}, {name}: {seconds:.1f} s", flush=True)
    finally:
        for name, (_, process, log) in endpoints.items():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            command = tuple(str(part) for part in process.args)  # type: ignore[union-attr]
            finished = Finished(command, process.returncode, time.monotonic() - started, log)
            out.record(f"fractofl serve local ({name})", finished, process.returncode == 0)
    out.tables.append(
        markdown_grid(
            [
                "image",
                "endpoint",
                "how the client sent it",
                "MiB sent",
                "requests",
                "seconds",
                "largest probability difference from the reference",
                "map tiles",
                "dominant",
            ],
            rows,
        )
    )
    out.notes.append(
        "Physical-scale ResNet-18 (64-px tiles at 0.25 um per pixel, random weights), served "
        f"by `fractofl serve local` with serving.max_payload_mb={LARGE_LIMIT_MB} (reference: "
        "the image goes whole) and 6 (SageMaker's real-time limit). Seconds: from the file to "
        "the answer with its mechanism map, the client's decoding and resampling included, "
        "2 CPU cores shared by client and endpoint. Requests: the client's one model-info "
        "request included. A map in one request is capped at 1024 "
        "tiles; the joined pieces keep the half-tile grid, so they hold more."
    )
    return out
