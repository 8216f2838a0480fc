"""The benchmark driver's own logic: part selection, each part's section of RESULTS.md,
and a part that fails or stops (real subprocesses, no benchmark run)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from outcome import PartOutcome
from parts import PART_NAMES, PARTS, Part, Shared, select_parts
from plan import Plan, make_plan
from report import Header, Row, begin_marker, end_marker, markdown_table, part_section
from report import write_section as write
from run import run_part

RUN_PY = Path(__file__).resolve().parents[2] / "bench" / "run.py"
HEADER = Header(
    "bench/run.py --parts x", "2026-12-03 08:00 UTC", "quick", Path("/w"), {"cpus": "2"}
)


def _section(part: str, body: str) -> str:
    return part_section(part, f"Title of {part}", HEADER, PartOutcome(tables=[body]))


def test_every_part_has_a_runner_that_imports() -> None:
    # Execute / Assert: each registered runner exists (imports its module, as the driver does)
    assert [part.name for part in PARTS] == list(PART_NAMES)
    assert all(callable(part.load()) for part in PARTS)


def test_parts_run_in_the_drivers_order_and_unknown_names_are_refused() -> None:
    # Execute
    chosen = select_parts("compression, strategies")
    # Assert: the part that reuses another runs after it, whatever order was typed
    assert [part.name for part in chosen] == ["strategies", "compression"]
    with pytest.raises(ValueError, match=r"unknown part\(s\) nope; choose from accuracy, "):
        select_parts("accuracy,nope")
    with pytest.raises(ValueError, match="no part named"):
        select_parts(" , ")


def test_an_unknown_part_exits_2_before_anything_runs(tmp_path: Path) -> None:
    # Execute
    result = subprocess.run(
        [sys.executable, str(RUN_PY), "--parts", "nope", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    # Assert
    assert result.returncode == 2
    assert "unknown part(s) nope" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_section_replaces_only_its_own_part_and_keeps_text_outside(tmp_path: Path) -> None:
    # Prepare: a file with hand-written text and two parts' sections, one under an older
    # marker comment
    results = tmp_path / "RESULTS.md"
    old_cost = "<!-- bench-cost:begin (written by an older driver) -->\nold cost\n"
    results.write_text(
        "# results\n\nhand-written intro\n\n"
        + _section("accuracy", "old accuracy table")
        + "\nhand-written reading\n\n"
        + old_cost
        + end_marker("cost")
        + "\n"
    )
    # Execute
    write(results, "cost", _section("cost", "new cost table"))
    write(results, "scale", _section("scale", "new scale table"))
    # Assert
    text = results.read_text()
    assert "old cost" not in text and "new cost table" in text
    assert text.count(begin_marker("cost")) == 1 and "older driver" not in text
    assert "old accuracy table" in text and "hand-written reading" in text
    assert text.index("hand-written reading") < text.index("new cost table")
    assert text.rstrip().endswith(end_marker("scale"))


def test_a_run_table_leaves_out_the_columns_no_row_fills() -> None:
    # Execute
    table = markdown_table([Row(run="a", accuracy="0.9"), Row(run="b", wall="12")])
    # Assert
    assert table.splitlines()[0] == "| Run | Test acc | Wall s | Status |"
    assert table.splitlines()[2] == "| a | 0.9 |  | ok |"


@dataclass(frozen=True)
class _FailingPart(Part):
    """A part whose runner is given, not imported: it runs one good and one bad step."""

    def load(self):  # type: ignore[no-untyped-def]
        def run(plan: Plan, shared: Shared) -> PartOutcome:
            out = PartOutcome()
            log = plan.logs_dir / "ok.log"
            out.run_step("fine", [sys.executable, "-c", "print('fine')"], log, 60)
            bad = [sys.executable, "-c", "import sys; print('the', 'cause'); sys.exit(3)"]
            out.run_step("broken", bad, plan.logs_dir / "bad.log", 60)
            return out

        return run


@dataclass(frozen=True)
class _RaisingPart(Part):
    """A part whose runner raises an error of its own."""

    def load(self):  # type: ignore[no-untyped-def]
        def run(plan: Plan, shared: Shared) -> PartOutcome:
            raise RuntimeError("no members online")

        return run


def test_a_part_that_stops_reports_its_steps_and_the_cause(tmp_path: Path) -> None:
    # Prepare
    plan = make_plan(True, tmp_path)
    part = _FailingPart("failing", "A failing part", "unused:unused")
    # Execute
    outcome, completed = run_part(part, plan, {})
    section = part_section(part.name, part.title, HEADER, outcome)
    # Assert: both steps recorded, the failure with its exit code and log tail, the stop
    assert not completed
    assert [label for label, _ in outcome.commands] == ["fine", "broken"]
    assert [label for label, _ in outcome.failures] == ["broken"]
    assert "**broken** (exit 3)" in section and "the cause" in section
    assert "**The part stopped**: broken failed (exit 3): " in section
    assert section.count("the cause") == 1  # the log tail once, under Failures


def test_a_part_that_raises_shows_the_traceback(tmp_path: Path) -> None:
    # Prepare
    plan = make_plan(True, tmp_path)
    part = _RaisingPart("raising", "A raising part", "unused:unused")
    # Execute
    outcome, completed = run_part(part, plan, {})
    # Assert
    assert not completed and outcome.commands == []
    assert "**The part stopped**: no members online" in outcome.tables[0]
    assert "RuntimeError: no members online" in outcome.tables[0]


def test_both_plans_size_every_part(tmp_path: Path) -> None:
    # Execute / Assert: the full plan (what RESULTS.md records) and the quick one build
    for quick in (False, True):
        plan = make_plan(quick, tmp_path)
        assert plan.personal.seeds and plan.tuning.sweeps
