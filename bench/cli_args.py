"""Command-line options shared by the benchmark drivers (run.py, run_strategies.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def bench_parser(
    description: str, parts: list[str], quick_help: str, results_help: str
) -> argparse.ArgumentParser:
    """--quick, --work, --parts (subset of ``parts``) and --results."""
    names = ",".join(parts)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--work", type=Path, default=BENCH_DIR / "out", help="work folder (default bench/out)"
    )
    parser.add_argument(
        "--parts", default=names, help=f"comma-separated subset of {names} (default all)"
    )
    parser.add_argument("--results", type=Path, help=results_help)
    return parser


def selected_parts(requested: str, known: list[str]) -> list[str] | None:
    """The parts asked for, or None (after saying which are valid) for an unknown one."""
    parts = [p.strip() for p in requested.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(known))
    if unknown:
        print(f"unknown part(s) {unknown}; choose from {sorted(known)}", file=sys.stderr)
        return None
    return parts
