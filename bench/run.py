"""The fractofl benchmark: runs the chosen parts and writes each one's section of RESULTS.md.

Usage: ``.venv/bin/python bench/run.py [--quick] [--parts accuracy,cost,...] [--work DIR]
[--results FILE]``; ``bench/README.md`` describes every part.

Every part runs the real programs (the ``fractofl`` CLI, Flower's engines, the local
endpoint) in subprocesses. A part's section is written as soon as the part ends, so a
long invocation that stops late keeps what it measured; a part that fails or stops is
reported in its section (with the command and the tail of its log) and the next part
still runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from machine import describe_machine
from outcome import PartOutcome, StepFailed
from parts import PART_NAMES, Part, Shared, select_parts
from plan import BENCH_DIR, Plan, make_plan
from report import Header, part_section, stopped_table, write_section

TRACEBACK_LINES = 20


def _parser() -> argparse.ArgumentParser:
    names = ",".join(PART_NAMES)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test of the harness"
    )
    parser.add_argument(
        "--parts", default=names, help=f"comma-separated subset of {names} (default: all)"
    )
    parser.add_argument(
        "--work", type=Path, default=BENCH_DIR / "out", help="work folder (default bench/out)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="Markdown file to write the sections into (default: bench/RESULTS.md, or "
        "<work>/quick/RESULTS.md with --quick, so a smoke test never overwrites results)",
    )
    return parser


def run_part(part: Part, plan: Plan, shared: Shared) -> tuple[PartOutcome, bool]:
    """The part's outcome, and whether it ran to its end (a part that raises is reported
    in its own section, with the tail of the traceback)."""
    try:
        return part.load()(plan, shared), True
    except StepFailed as error:  # its command and log tail are under "Failures"
        headline = str(error).splitlines()[0]
        error.outcome.tables.append(stopped_table(headline))
        print(f"    {part.name} stopped: {headline}", file=sys.stderr, flush=True)
        return error.outcome, False
    except Exception as error:  # one part's failure must not lose the others' results
        tail = "".join(traceback.format_exc()).rstrip().splitlines()[-TRACEBACK_LINES:]
        outcome = PartOutcome(tables=[stopped_table(str(error), "\n".join(tail))])
        print(f"    {part.name} stopped: {error}", file=sys.stderr, flush=True)
        return outcome, False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print their tables, write their sections and ``results.json``;
    exit 1 when anything failed, 2 for an unknown part."""
    args = _parser().parse_args(argv)
    try:
        parts = select_parts(args.parts)
    except ValueError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    plan = make_plan(args.quick, args.work)
    plan.work.mkdir(parents=True, exist_ok=True)
    results = args.results or (plan.work / "RESULTS.md" if args.quick else BENCH_DIR / "RESULTS.md")
    started = datetime.now(UTC)
    command = shlex.join(sys.orig_argv)
    machine = describe_machine()
    print(f"bench ({plan.mode}) in {plan.work}; logs in {plan.logs_dir}", flush=True)

    shared: Shared = {}
    data: dict[str, object] = {}
    failed: list[str] = []
    for part in parts:
        print(f"[{datetime.now():%H:%M:%S}] {part.name}: {part.title} ...", flush=True)
        date = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        outcome, completed = run_part(part, plan, shared)
        header = Header(command, date, plan.mode, plan.work, machine)
        write_section(results, part.name, part_section(part.name, part.title, header, outcome))
        print("\n" + "\n\n".join(outcome.tables) + "\n", flush=True)
        for label, finished in outcome.failures:
            print(f"FAILED {label}: {finished.shell}\n{finished.log_tail()}\n", file=sys.stderr)
        if outcome.failures or not completed:
            failed.append(part.name)
        data[part.name] = outcome.data

    (plan.work / "results.json").write_text(
        json.dumps(
            {"command": command, "date": started.isoformat(), "parts": data},
            indent=2,
            default=str,
        )
    )
    print(f"results written to {results}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
