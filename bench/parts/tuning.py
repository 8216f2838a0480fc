"""Part tuning: the server-side strategies' settings swept on the strategies group's set,
to choose defaults that work on our data (FedProx's mu, FedAdam's and FedAdagrad's server
learning rate), beside FedAvg."""

from __future__ import annotations

from fractofl_cli import RunFolderResult
from outcome import PartOutcome
from plan import Plan
from report import fmt, markdown_grid, ratio, status
from run_metrics import best_accuracy

from parts.strategies import every_run, run_fractofl_in


def run_tuning(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """One run per (strategy, value); final and best-round accuracy, and over FedAvg's."""
    out = PartOutcome()
    seed = f"seed={plan.tuning.seed}"
    reference = run_fractofl_in(
        plan, out, "tuning", "fedavg", "simulate", ["strategy=fedavg", seed]
    )
    rows = [["fedavg", "", "", fmt(reference.final_accuracy), _best(reference), "1.000", ""]]
    best: dict[str, tuple[float, str]] = {}
    for strategy, argument, values in plan.tuning.sweeps:
        for value in values:
            label = f"{strategy} {argument}={value}"
            extra = [f"strategy={strategy}", f"strategy.args.{argument}={value}", seed]
            run = run_fractofl_in(plan, out, "tuning", label, "simulate", extra)
            rows.append(
                [
                    strategy,
                    argument,
                    str(value),
                    fmt(run.final_accuracy),
                    _best(run),
                    fmt(ratio(run.final_accuracy, reference.final_accuracy)),
                    status(run.finished, run.ok),
                ]
            )
            if run.final_accuracy is not None and (
                strategy not in best or run.final_accuracy > best[strategy][0]
            ):
                best[strategy] = (run.final_accuracy, f"{argument}={value}")
            out.data[label] = run.final_accuracy
    out.tables.append(
        every_run(plan)
        + f" Seed {plan.tuning.seed}.\n\n"
        + markdown_grid(
            [
                "Strategy",
                "Setting",
                "Value",
                "Final test acc",
                "Best-round test acc",
                "Final / FedAvg",
                "Status",
            ],
            rows,
        )
    )
    out.notes.append(
        "Best final accuracy per strategy: "
        + "; ".join(f"{s} {setting} ({acc:.3f})" for s, (acc, setting) in best.items())
        + ". One seed: differences of a few points are within the seeds' spread (part personal)."
    )
    return out


def _best(run: RunFolderResult) -> str:
    return fmt(best_accuracy(run.rows))
