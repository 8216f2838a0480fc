"""Aggregation time of 10 ResNet-18-sized updates: fractofl's coordinator path, Flower's
FedAvg, and a plain numpy copy of the same bytes (the memory-bandwidth floor).

Run by hand: ``.venv/bin/python bench/programs/aggregation.py [--updates 10] [--repeats 7]
[--retain-freed-mb MB] [--json FILE]``. ``--retain-freed-mb`` applies the coordinator's
``updates.retain_freed_mb`` malloc setting to this process first (default: the
coordinator's default; 0: malloc's own defaults). Everything is measured in this one
process; each figure is the median of ``--repeats`` repetitions. (1) is profiled once
more with cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from flower_grid import grid_with_nodes
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fractofl.core.config.run_config import UpdatesConfig
from fractofl.core.model.architectures import build_model
from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.server.heap import retain_freed_memory
from fractofl.strategies.registry import CommonStrategyArgs, build_strategy

State = dict[str, np.ndarray]


def resnet18_state() -> State:
    """numpy copies of a fresh ``resnet18`` (4 classes) state dict."""
    model = build_model("resnet18", 4)
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def member_deltas(reference: State, count: int) -> list[State]:
    """``count`` random small updates shaped like ``reference`` (counters advance by 10)."""
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(count):
        delta = {}
        for key, ref in reference.items():
            if np.issubdtype(ref.dtype, np.floating):
                delta[key] = (rng.standard_normal(ref.shape, dtype=np.float32) * 0.01).astype(
                    ref.dtype
                )
            else:
                delta[key] = np.full(ref.shape, 10, dtype=ref.dtype)
        deltas.append(delta)
    return deltas


def common_args(count: int) -> CommonStrategyArgs:
    """Sample all ``count`` nodes; Flower's weighted metric mean."""
    return CommonStrategyArgs(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=count,
        min_evaluate_nodes=count,
        min_available_nodes=count,
        train_metrics_aggr_fn=aggregate_metricrecords,
        evaluate_metrics_aggr_fn=aggregate_metricrecords,
    )


def replies(instructions: Sequence[Message], payloads: Sequence[State]) -> list[Message]:
    """One reply per instruction carrying its payload as an ArrayRecord and num-examples."""
    return [
        Message(
            content=RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in payload.items()}),
                    "metrics": MetricRecord({"num-examples": 100 + 10 * i}),
                }
            ),
            reply_to=instruction,
        )
        for i, (instruction, payload) in enumerate(zip(instructions, payloads, strict=True))
    ]


def timed(run: Callable[[], object]) -> float:
    """Seconds ``run()`` takes (garbage collected before, not during)."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started
    finally:
        gc.enable()


# Where the coordinator path spends its time: (label, file name, function name).
# Cumulative times nest (e.g. _with_weights includes Array serialisation).
PROFILE_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("whole UpdateGuard.aggregate_train", "guard.py", "aggregate_train"),
    ("guard: _check (decode + validate every reply)", "guard.py", "_check"),
    ("guard: _decode", "guard.py", "_decode"),
    ("npy_arrays: array_view (zero-copy view of Array bytes)", "npy_arrays.py", "array_view"),
    ("Array.numpy() deserialisation (np.load)", "array.py", "numpy"),
    ("compression: decode_update", "compression.py", "decode_update"),
    ("validation: structural_problem", "validation.py", "structural_problem"),
    ("validation: measure_update (norm + finiteness)", "validation.py", "measure_update"),
    ("validation: update_norm", "validation.py", "update_norm"),
    ("guard: _mean (the weighted mean of the deltas)", "guard.py", "_mean"),
    ("mean: RunningMean.add", "mean.py", "add"),
    ("guard: _with_weights (ref + delta, new Arrays)", "guard.py", "_with_weights"),
    (
        "Flower: aggregate_arrayrecords (weighted mean)",
        "strategy_utils.py",
        "aggregate_arrayrecords",
    ),
    ("guard: _with_model_dtypes (new Arrays)", "guard.py", "_with_model_dtypes"),
    ("Array(ndarray) serialisation (np.save to bytes)", "array.py", "from_numpy_ndarray"),
    ("npy_arrays: array_of (header + one copy)", "npy_arrays.py", "array_of"),
)


def profile(run: Callable[[], object], limit: int) -> dict[str, list[dict[str, Any]]]:
    """One profiled ``run()``: the ``limit`` entries of largest cumulative time, and the
    cumulative time of each of :data:`PROFILE_CATEGORIES`."""
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    entries = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)
    top = [
        {
            "function": f"{Path(file).name}:{line}({func})" if line else func,
            "calls": calls,
            "tottime_s": tottime,
            "cumtime_s": cumtime,
        }
        for (file, line, func), (_, calls, tottime, cumtime, _) in entries[:limit]
    ]
    categories = []
    for label, file_name, func_name in PROFILE_CATEGORIES:
        hits = [
            (calls, cumtime)
            for (file, _, func), (_, calls, _, cumtime, _) in stats.items()
            if Path(file).name == file_name and func == func_name
        ]
        if hits:
            calls = sum(h[0] for h in hits)
            categories.append({"what": label, "calls": calls, "cumtime_s": max(h[1] for h in hits)})
    return {"top": top, "categories": categories}


def measure(updates: int, repeats: int, profile_limit: int = 25) -> dict[str, Any]:
    """Median seconds of (1) guard + fractofl fedavg, (2) Flower FedAvg, (3) numpy copy."""
    reference = resnet18_state()
    deltas = member_deltas(reference, updates)
    spec = CompressionSpec("none")
    payloads = [encode_update(delta, spec) for delta in deltas]
    full = [{k: ref + d[k] for k, ref in reference.items()} for d in deltas]
    parameters = sum(v.size for v in reference.values() if np.issubdtype(v.dtype, np.floating))
    update_bytes = sum(v.nbytes for v in reference.values())

    guard = build_strategy("fedavg", common_args(updates), {}, spec, max_norm_multiple=5.0)
    start = ArrayRecord({k: Array(v) for k, v in reference.items()})
    instructions = list(guard.configure_train(1, start, ConfigRecord(), grid_with_nodes(updates)))
    flower = FedAvg(**common_args(updates).flower_kwargs())
    full_replies = replies(instructions, full)

    sources = [np.concatenate([v.reshape(-1).view(np.uint8) for v in d.values()]) for d in full]
    targets = [np.empty_like(s) for s in sources]

    def copy_all() -> None:
        for target, source in zip(targets, sources, strict=True):
            np.copyto(target, source)

    # One untimed pass of each first: the copy's targets are fresh pages until touched.
    copy_all()
    flower.aggregate_train(1, full_replies)
    guard.aggregate_train(1, replies(instructions, payloads))
    guard_s, flower_s, copy_s = [], [], []
    for _ in range(repeats):
        fresh = replies(instructions, payloads)  # the guard rewrites replies in place
        guard_s.append(timed(partial(guard.aggregate_train, 1, fresh)))
        del fresh
        flower_s.append(timed(lambda: flower.aggregate_train(1, full_replies)))
        copy_s.append(timed(copy_all))
    fresh = replies(instructions, payloads)
    profiled = profile(partial(guard.aggregate_train, 1, fresh), profile_limit)

    guard_med, flower_med, copy_med = (statistics.median(s) for s in (guard_s, flower_s, copy_s))
    return {
        "updates": updates,
        "repeats": repeats,
        "parameters_float": int(parameters),
        "bytes_per_update": int(update_bytes),
        "copied_bytes": int(sum(s.nbytes for s in sources)),
        "guard_fedavg_s": guard_med,
        "flower_fedavg_s": flower_med,
        "numpy_copy_s": copy_med,
        "ratio_guard_to_copy": guard_med / copy_med,
        "ratio_flower_to_copy": flower_med / copy_med,
        "copy_gb_per_s": sum(s.nbytes for s in sources) / copy_med / 1e9,
        "samples": {"guard": guard_s, "flower": flower_s, "copy": copy_s},
        "profile_guard_fedavg": profiled["top"],
        "profile_categories": profiled["categories"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print a summary, and write the JSON when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--retain-freed-mb", type=int, default=UpdatesConfig().retain_freed_mb)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    applied = retain_freed_memory(args.retain_freed_mb)
    result = measure(args.updates, args.repeats)
    result["retain_freed_mb"] = args.retain_freed_mb if applied else 0
    print(
        f"{args.updates} updates of {result['parameters_float'] / 1e6:.2f} M parameters "
        f"({result['bytes_per_update'] / 1e6:.1f} MB each), median of {args.repeats}, "
        f"retain_freed_mb={result['retain_freed_mb']}:\n"
        f"  (1) UpdateGuard.aggregate_train (fedavg) {result['guard_fedavg_s']:.3f} s "
        f"= {result['ratio_guard_to_copy']:.1f} x copy\n"
        f"  (2) Flower FedAvg.aggregate_train        {result['flower_fedavg_s']:.3f} s "
        f"= {result['ratio_flower_to_copy']:.1f} x copy\n"
        f"  (3) numpy copy of the same bytes        {result['numpy_copy_s']:.3f} s "
        f"({result['copy_gb_per_s']:.1f} GB/s)"
    )
    print("  profile of (1), cumulative seconds (nested):")
    for entry in result["profile_categories"]:
        print(f"    {entry['cumtime_s']:8.3f} s  {entry['calls']:6d} calls  {entry['what']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
