"""Benchmark fractofl: accuracy vs centralized, round cost vs plain Flower, memory at scale.

Usage: ``.venv/bin/python bench/run.py [--quick] [--work DIR] [--parts a,b,c]``

Every fractofl run goes through the real CLI in a subprocess. Outputs go under the work
folder (default ``bench/out/``); the table is printed and, for the full run, written
into ``bench/RESULTS.md`` (the section between the bench markers).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from accuracy import run_accuracy
from cli_args import BENCH_DIR, bench_parser, selected_parts
from cost import run_cost
from machine import describe_machine
from outcome import PartOutcome
from plan import Plan, make_plan
from report import markdown_table, results_section, write_section
from scale import run_scale

PARTS: dict[str, tuple[str, Callable[[Plan], PartOutcome]]] = {
    "a": ("accuracy: federated vs centralized", run_accuracy),
    "b": ("framework cost: fractofl vs plain Flower round", run_cost),
    "c": ("scale: peak memory with many members", run_scale),
}


def _parser() -> argparse.ArgumentParser:
    return bench_parser(
        __doc__.splitlines()[0],
        list(PARTS),
        "tiny data, 2 rounds, 10 members: a smoke test",
        "Markdown file to write the results section into (default: bench/RESULTS.md for a "
        "full run, "
        "<work>/quick/RESULTS.md with --quick)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print the table, write RESULTS.md; exit 1 if anything failed."""
    args = _parser().parse_args(argv)
    parts = selected_parts(args.parts, list(PARTS))
    if parts is None:
        return 2
    plan = make_plan(args.quick, args.work)
    plan.work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(sys.orig_argv)
    started = datetime.now(UTC)
    print(f"bench ({plan.mode}) in {plan.work}; logs in {plan.logs_dir}", flush=True)

    outcome = PartOutcome()
    for key in parts:
        title, runner = PARTS[key]
        print(f"[{datetime.now():%H:%M:%S}] part ({key}) {title} ...", flush=True)
        result = runner(plan)
        for label, finished in result.commands:
            print(f"    {label}: exit {finished.returncode} in {finished.wall_s:.0f} s", flush=True)
        outcome.extend(result)

    table = markdown_table(outcome.rows)
    print("\n" + table + "\n")
    for label, finished in outcome.failures:
        print(f"FAILED {label}: {finished.shell}\n{finished.log_tail()}\n", file=sys.stderr)

    section = results_section(
        table=table,
        command=command,
        date=f"{started:%Y-%m-%d %H:%M} UTC",
        machine=describe_machine(),
        commands=outcome.commands,
        failures=outcome.failures,
        notes=[f"mode: {plan.mode}; work folder {plan.work}", *outcome.notes],
    )
    results = args.results or (plan.work / "RESULTS.md" if args.quick else BENCH_DIR / "RESULTS.md")
    write_section(results, section)
    (plan.work / "results.json").write_text(
        json.dumps({"command": command, "date": started.isoformat(), **outcome.data}, indent=2)
    )
    print(f"results written to {results}")
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
