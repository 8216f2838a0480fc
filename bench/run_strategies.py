"""Benchmark the aggregation strategies: accuracy vs centralized, Byzantine robustness,
update compression, and the coordinator's aggregation time.

Usage: ``.venv/bin/python bench/run_strategies.py [--quick] [--work DIR] [--parts a,b,c,d]``

Every fractofl run goes through the real CLI in a subprocess, on one synthetic set
(5 members, Dirichlet alpha 0.5). Outputs go under ``<work>/strategies-<full|quick>/``;
the tables are printed and written into ``bench/RESULTS.md`` (this benchmark's own section)
for a full run, into the work folder with ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aggregation_part import run_aggregation
from cli_args import BENCH_DIR, bench_parser, selected_parts
from compression_runs import run_compression
from machine import describe_machine
from outcome import PartOutcome
from report import write_section
from strategy_plan import StrategyPlan, make_strategy_plan
from strategy_report import BEGIN, END, strategies_section
from strategy_runs import run_accuracy, run_byzantine

Part = Callable[[StrategyPlan, dict[str, object]], PartOutcome]
PARTS: dict[str, tuple[str, Part]] = {
    "a": ("strategies vs centralized", run_accuracy),
    "b": ("one Byzantine member of five", run_byzantine),
    "c": ("update compression", run_compression),
    "d": ("aggregation time vs memory copy", run_aggregation),
}


def _parser() -> argparse.ArgumentParser:
    return bench_parser(
        __doc__.splitlines()[0],
        list(PARTS),
        "small data, 2 rounds, 3 strategies: a smoke test",
        "Markdown file to write the section into (default: bench/RESULTS.md for a full run, "
        "<work>/strategies-quick/RESULTS.md with --quick)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print the tables, write RESULTS.md; exit 1 if anything failed."""
    args = _parser().parse_args(argv)
    parts = selected_parts(args.parts, list(PARTS))
    if parts is None:
        return 2
    plan = make_strategy_plan(args.quick, args.work)
    plan.work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(sys.orig_argv)
    started = datetime.now(UTC)
    print(f"strategies bench ({plan.mode}) in {plan.work}; logs in {plan.logs_dir}", flush=True)

    outcome = PartOutcome()
    shared: dict[str, object] = {}
    for key in parts:
        title, runner = PARTS[key]
        print(f"[{datetime.now():%H:%M:%S}] part ({key}) {title} ...", flush=True)
        outcome.extend(runner(plan, shared))

    print("\n" + "\n\n".join(outcome.tables) + "\n")
    for label, finished in outcome.failures:
        print(f"FAILED {label}: {finished.shell}\n{finished.log_tail()}\n", file=sys.stderr)

    section = strategies_section(
        tables=outcome.tables,
        command=command,
        date=f"{started:%Y-%m-%d %H:%M} UTC",
        machine=describe_machine(),
        commands=outcome.commands,
        failures=outcome.failures,
        notes=[
            f"mode: {plan.mode}; work folder {plan.work}; every run: "
            f"`{' '.join(plan.base_overrides())}`",
            *outcome.notes,
        ],
    )
    default = plan.work / "RESULTS.md" if args.quick else BENCH_DIR / "RESULTS.md"
    results = args.results or default
    write_section(results, section, BEGIN, END)
    (plan.work / "results.json").write_text(
        json.dumps(
            {"command": command, "date": started.isoformat(), **outcome.data}, indent=2, default=str
        )
    )
    print(f"results written to {results}")
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
