"""Parts (a) and (b) of the strategies benchmark: every strategy against centralized
training, and the robust aggregators against one sign-flipping member."""

from __future__ import annotations

import re
from collections.abc import Sequence

from fractofl_cli import RunFolderResult, run_fractofl
from outcome import PartOutcome
from report import fmt, markdown_grid, ratio, status
from run_metrics import rounds_to_reach, total_refused
from strategy_plan import StrategyPlan

TARGET_SHARE = 0.95
ATTACK = ("federation.attackers=1", "federation.attack=sign_flip")
NO_NORM_TEST = "updates.max_norm_multiple=1e9"


def run_fractofl_in(
    plan: StrategyPlan, out: PartOutcome, label: str, subcommand: str, extra: Sequence[str]
) -> RunFolderResult:
    """Run ``fractofl <subcommand>`` on the plan's data with ``extra`` overrides; record it."""
    name = re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")  # "(a) fedavg" -> "a-fedavg"
    result = run_fractofl(
        subcommand,
        [*plan.base_overrides(), *extra],
        plan.runs_dir,
        name,
        plan.logs_dir,
        plan.timeout_s,
    )
    out.record(label, result.finished, result.ok)
    print(f"    {label}: exit {result.finished.returncode} in {result.finished.wall_s:.0f} s")
    return result


def _rounds_cell(run: RunFolderResult, target: float | None) -> str:
    if not run.ok or target is None:
        return ""
    reached = rounds_to_reach(run.rows, target)
    return "-" if reached is None else str(reached)


def run_accuracy(plan: StrategyPlan, shared: dict[str, object]) -> PartOutcome:
    """(a) Final accuracy and rounds to 95 % of centralized, for centralized and each strategy."""
    out = PartOutcome()
    central = run_fractofl_in(plan, out, "(a) centralized", "centralized", [])
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
    for strategy in plan.strategies:
        run = run_fractofl_in(plan, out, f"(a) {strategy}", "simulate", [f"strategy={strategy}"])
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
        shared[f"a:{strategy}"] = run
    headers = ["Run", "Final test acc", "Acc / central", "Rounds to 95 % of central", "Wall s"]
    out.tables.append(
        f"### (a) Strategies vs centralized ({plan.rounds} rounds)\n\n"
        + markdown_grid([*headers, "Status"], rows)
    )
    out.data["a"] = {"target_accuracy": target, "final_accuracy": accuracies}
    shared["a:accuracy"] = accuracies
    out.notes.append(
        f"(a) 'Rounds to 95 % of central': first round >= 1 whose coordinator test accuracy "
        f">= {TARGET_SHARE} x the centralized final accuracy ({fmt(target)}); '-' if none. "
        "Centralized: one 'round' = local_epochs epochs on the union of the members' data."
    )
    return out


def run_byzantine(plan: StrategyPlan, shared: dict[str, object]) -> PartOutcome:
    """(b) One sign-flipping member of five, with the guard's norm test on and off."""
    out = PartOutcome()
    clean = shared.get("a:accuracy", {})
    assert isinstance(clean, dict)
    settings = [(s, True) for s in plan.guarded] + [(s, False) for s in plan.strategies]
    rows, data = [], {}
    for strategy, guarded in settings:
        guard = "on (x5 median)" if guarded else "off (1e9)"
        extra = [f"strategy={strategy}", *ATTACK, *([] if guarded else [NO_NORM_TEST])]
        label = f"(b) {strategy} guard {'on' if guarded else 'off'}"
        run = run_fractofl_in(plan, out, label, "simulate", extra)
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
    headers = ["Strategy", "Guard norm test", "Final test acc", "Clean acc (a)", "Refused"]
    out.tables.append(
        f"### (b) 1 of 5 members Byzantine (sign_flip) ({plan.rounds} rounds)\n\n"
        + markdown_grid([*headers, "Wall s", "Status"], rows)
    )
    out.data["b"] = data
    out.notes.append(
        "(b) `federation.attackers=1 federation.attack=sign_flip` (attack_scale 10: the "
        "member sends -10 x its update). Guard on: `updates.max_norm_multiple=5` (default); "
        f"off: `{NO_NORM_TEST}`, so the aggregator faces the attack itself. 'Refused': sum of "
        "metrics.csv refused_updates over the rounds."
    )
    return out
