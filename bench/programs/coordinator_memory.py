"""The coordinator's peak memory and time for one round of N ResNet-18 updates, gathered
(all replies held, as Flower's ``send_and_receive`` returns them) or streamed (each reply
screened on arrival, its bytes spilled to disk, the mean folded one update at a time).

Run by hand: ``.venv/bin/python bench/programs/coordinator_memory.py --mode streamed
--updates 100 --spill-dir DIR [--json FILE]``; one mode and count per process, so the
process's peak resident memory (``ru_maxrss``) is that configuration's. The replies are
made one at a time from four distinct encoded updates (each reply a fresh copy of the
bytes, as replies off the wire are), on a real in-memory Grid of N nodes, through
``UpdateGuard`` with FedAvg and compression none: what the coordinator runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aggregation import common_args, member_deltas, resnet18_state
from flower_grid import grid_with_nodes
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fractofl.core.config.run_config import UpdatesConfig
from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.server.heap import retain_freed_memory
from fractofl.strategies.guard import UpdateGuard
from fractofl.strategies.npy_arrays import array_of
from fractofl.strategies.registry import build_strategy
from fractofl.strategies.spill import UpdateSpill

DISTINCT_UPDATES = 4
COPY_REPEATS = 5


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _replies(
    instructions: Sequence[Message], encoded: Sequence[dict[str, Array]]
) -> Iterator[Message]:
    """One reply per instruction, each with its own copy of one of ``encoded``."""
    for i, instruction in enumerate(instructions):
        source = encoded[i % len(encoded)]
        arrays = {
            key: Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=bytes(bytearray(a.data)))
            for key, a in source.items()
        }
        content = RecordDict(
            {
                "arrays": ArrayRecord(arrays),
                "metrics": MetricRecord({"num-examples": 100 + i}),
            }
        )
        yield Message(content, reply_to=instruction)


def _copy_floor_s(encoded: dict[str, Array], count: int) -> float:
    """``count`` x the time of one update's bytes copied into a preallocated buffer."""
    source = np.frombuffer(b"".join(a.data for a in encoded.values()), dtype=np.uint8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(COPY_REPEATS):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return best * count


def measure(mode: str, count: int, spill_dir: Path) -> dict[str, Any]:
    """One round of ``count`` updates in ``mode``; the measurements."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)  # the bench's grid stores nothing
    retain_freed_memory(UpdatesConfig().retain_freed_mb)
    reference = resnet18_state()
    spec = CompressionSpec("none")
    encoded = [
        {k: array_of(np.asarray(v)) for k, v in encode_update(delta, spec).items()}
        for delta in member_deltas(reference, DISTINCT_UPDATES)
    ]
    bytes_per_update = sum(len(a.data) for a in encoded[0].values())
    guard: UpdateGuard = build_strategy("fedavg", common_args(count), {}, spec, 5.0)
    if mode == "streamed":
        shutil.rmtree(spill_dir, ignore_errors=True)
        guard.spill = UpdateSpill(spill_dir, min_free_mb=1024)
    grid = grid_with_nodes(count)
    start = ArrayRecord({k: array_of(v) for k, v in reference.items()})
    instructions = list(guard.configure_train(1, start, ConfigRecord(), grid))
    grid.push_messages(instructions)  # gives the instructions their message ids
    del start
    rss_before = _peak_rss_mb()

    collect_s = 0.0
    kept: list[Message] = []
    for reply in _replies(instructions, encoded):
        started = time.perf_counter()
        if mode == "streamed":
            light = guard.receive(reply)
            if light is not None:
                kept.append(light)
        else:
            kept.append(reply)
        collect_s += time.perf_counter() - started
        del reply
    started = time.perf_counter()
    arrays, _ = guard.aggregate_train(1, kept)
    aggregate_s = time.perf_counter() - started
    if arrays is None or guard.accepted_count != count:
        raise RuntimeError(f"accepted {guard.accepted_count} of {count} updates")
    return {
        "mode": mode,
        "updates": count,
        "bytes_per_update": bytes_per_update,
        "rss_before_replies_mb": rss_before,
        "peak_rss_mb": _peak_rss_mb(),
        "collect_s": collect_s,
        "aggregate_s": aggregate_s,
        "copy_floor_s": _copy_floor_s(encoded[0], count),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure one configuration; print it, and write it as JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("gathered", "streamed"), required=True)
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--spill-dir", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    try:
        result = measure(args.mode, args.updates, args.spill_dir)
    finally:
        shutil.rmtree(args.spill_dir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
