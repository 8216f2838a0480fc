"""Part compression: bytes sent and accuracy of FedAvg under update compression."""

from __future__ import annotations

from fractofl_cli import RunFolderResult
from outcome import PartOutcome
from plan import Plan
from report import fmt, markdown_grid, ratio, status
from run_metrics import mean_bytes_per_member

from parts.strategies import every_run, run_fractofl_in

SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("none (float32)", ()),
    ("float16", ("updates.compression=float16",)),
    ("int8", ("updates.compression=int8",)),
    ("int8 + top-k 0.1", ("updates.compression=int8", "updates.topk_fraction=0.1")),
)


def run_compression(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """FedAvg with each compression; ``none`` reuses the strategies part's FedAvg run when
    the same invocation ran it."""
    out = PartOutcome()
    results: list[tuple[str, RunFolderResult, bool]] = []
    for label, extra in SETTINGS:
        reused = shared.get("strategies:fedavg") if not extra else None
        if isinstance(reused, RunFolderResult):
            results.append((label, reused, True))
            continue
        run = run_fractofl_in(
            plan, out, "compression", f"fedavg {label}", "simulate", ["strategy=fedavg", *extra]
        )
        results.append((label, run, False))

    base = results[0][1]
    base_bytes = mean_bytes_per_member(base.rows) if base.ok else None
    rows, data = [], {}
    for label, run, reused in results:
        mean_bytes = mean_bytes_per_member(run.rows) if run.ok else None
        rows.append(
            [
                label + (" = strategies' fedavg run" if reused else ""),
                fmt(mean_bytes, 0),
                fmt(ratio(mean_bytes, base_bytes)),
                fmt(run.final_accuracy),
                fmt(ratio(run.final_accuracy, base.final_accuracy)),
                status(run.finished, run.ok),
            ]
        )
        data[label] = {"mean_bytes_per_member": mean_bytes, "accuracy": run.final_accuracy}
    headers = ["Compression", "Mean bytes / member", "Bytes / none", "Final test acc"]
    out.tables.append(
        every_run(plan) + "\n\n" + markdown_grid([*headers, "Acc / none", "Status"], rows)
    )
    out.data = data
    out.notes.append(
        "'Mean bytes / member': mean over rounds 1.. of metrics.csv bytes_per_member "
        "(array bytes of a member's update as received, no framing); ratios are to "
        "`updates.compression=none` (float32)."
    )
    return out
