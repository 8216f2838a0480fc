"""Parts strategies and byzantine: every strategy against centralized training, and the
robust aggregators against one sign-flipping member."""

from __future__ import annotations

import re
from collections.abc import Sequence

from fractofl_cli import RunFolderResult, run_fractofl
from outcome import PartOutcome
from plan import Plan
from report import fmt, markdown_grid, ratio, status
from run_metrics import rounds_to_reach, total_refused

TARGET_SHARE = 0.95
ATTACK = ("federation.attackers=1", "federation.attack=sign_flip")
NO_NORM_TEST = "updates.max_norm_multiple=1e9"


def run_fractofl_in(
    plan: Plan, out: PartOutcome, part: str, label: str, subcommand: str, extra: Sequence[str]
) -> RunFolderResult:
    """Run ``fractofl <subcommand>`` on the strategies group's data with ``extra``
    overrides, in run folder ``<part>-<label>``; record it."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")  # "krum guard on" -> "krum-guard-on"
    result = run_fractofl(
        subcommand,
        [*plan.strategy_overrides(), *extra],
        plan.runs_dir,
        f"{part}-{slug}",
        plan.logs_dir,
        plan.timeout_s,
    )
    out.record(label, result.finished, result.ok)
    return result


def every_run(plan: Plan) -> str:
    """The sentence above a table: rounds and the overrides every run shares."""
    return f"{plan.strategies.rounds} rounds; every run: `{' '.join(plan.strategy_overrides())}`."


def _rounds_cell(run: RunFolderResult, target: float | None) -> str:
    if not run.ok or target is None:
        return ""
    reached = rounds_to_reach(run.rows, target)
    return "-" if reached is None else str(reached)


def run_strategies(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Final accuracy and rounds to 95 % of centralized, for centralized and each strategy."""
    out = PartOutcome()
    central = run_fractofl_in(plan, out, "strategies", "centralized", "centralized", [])
    central_acc = central.final_accuracy
    target = None if central_acc is None else TARGET_SHARE * central_acc
    rows = [
        [
            "centralized",
            fmt(central_acc),
            "1.000" if central_acc else "",
            _rounds_cell(central, target),
            fmt(central.finished.wall_s, 0),
            status(central.finished, central.ok),
        ]
    ]
    accuracies: dict[str, float | None] = {"centralized": central_acc}
    for strategy in plan.strategies.strategies:
        extra = [f"strategy={strategy}"]
        run = run_fractofl_in(plan, out, "strategies", strategy, "simulate", extra)
        accuracies[strategy] = run.final_accuracy
        rows.append(
            [
                strategy,
                fmt(run.final_accuracy),
                fmt(ratio(run.final_accuracy, central_acc)),
                _rounds_cell(run, target),
                fmt(run.finished.wall_s, 0),
                status(run.finished, run.ok),
            ]
        )
        shared[f"strategies:{strategy}"] = run
    headers = ["Run", "Final test acc", "Acc / central", "Rounds to 95 % of central", "Wall s"]
    out.tables.append(every_run(plan) + "\n\n" + markdown_grid([*headers, "Status"], rows))
    out.data = {"target_accuracy": target, "final_accuracy": accuracies}
    shared["strategies:accuracy"] = accuracies
    out.notes.append(
        f"'Rounds to 95 % of central': first round >= 1 whose coordinator test accuracy "
        f">= {TARGET_SHARE} x the centralized final accuracy ({fmt(target)}); '-' if none. "
        "Centralized: one 'round' = local_epochs epochs on the union of the members' data."
    )
    return out


def run_byzantine(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """One sign-flipping member of five, with the guard's norm test on and off."""
    out = PartOutcome()
    clean = shared.get("strategies:accuracy", {})
    assert isinstance(clean, dict)
    sizes = plan.strategies
    settings = [(s, True) for s in sizes.guarded] + [(s, False) for s in sizes.strategies]
    rows, data = [], {}
    for strategy, guarded in settings:
        guard = "on (x5 median)" if guarded else "off (1e9)"
        extra = [f"strategy={strategy}", *ATTACK, *([] if guarded else [NO_NORM_TEST])]
        label = f"{strategy} guard {'on' if guarded else 'off'}"
        run = run_fractofl_in(plan, out, "byzantine", label, "simulate", extra)
        refused = total_refused(run.rows) if run.ok else None
        rows.append(
            [
                strategy,
                guard,
                fmt(run.final_accuracy),
                fmt(clean.get(strategy)),
                "" if refused is None else str(refused),
                fmt(run.finished.wall_s, 0),
                status(run.finished, run.ok),
            ]
        )
        data[f"{strategy}/guard-{'on' if guarded else 'off'}"] = {
            "accuracy": run.final_accuracy,
            "refused_updates": refused,
        }
    headers = ["Strategy", "Guard norm test", "Final test acc", "Clean acc", "Refused"]
    out.tables.append(
        f"1 of 5 members Byzantine (sign_flip); {every_run(plan)}\n\n"
        + markdown_grid([*headers, "Wall s", "Status"], rows)
    )
    out.data = data
    out.notes.append(
        "`federation.attackers=1 federation.attack=sign_flip` (attack_scale 10: the "
        "member sends -10 x its update). Guard on: `updates.max_norm_multiple=5` (default); "
        f"off: `{NO_NORM_TEST}`, so the aggregator faces the attack itself. 'Refused': sum of "
        "metrics.csv refused_updates over the rounds. 'Clean acc': the strategy's accuracy "
        "without the attack, from the strategies part of the same invocation (empty when "
        "that part did not run)."
    )
    return out
