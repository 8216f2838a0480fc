"""Part accuracy: final accuracy of federated (Dirichlet 0.5 and IID) vs centralized training."""

from __future__ import annotations

from fractofl_cli import RunFolderResult, run_fractofl
from outcome import PartOutcome
from plan import Plan
from report import Row, fmt, markdown_table, ratio, status

DIRICHLET_DATA = "alpha05"
IID_DATA = "iid"


def dirichlet_overrides(plan: Plan) -> list[str]:
    """The default (alpha 0.5) synthetic set of this plan; parts accuracy and cost share it."""
    return [f"data.root={plan.data_dir / DIRICHLET_DATA}", *plan.simulation.data_overrides]


def _row(label: str, run: RunFolderResult, central: float | None, federated: bool) -> Row:
    return Row(
        run=label,
        accuracy=fmt(run.final_accuracy),
        macro_f1=fmt(run.final_macro_f1),
        vs_central=fmt(ratio(run.final_accuracy, central)) if federated else "",
        per_round=fmt(run.seconds_per_round(), 1),
        per_round_warm=fmt(run.seconds_per_round(start_round=1), 1),
        wall=fmt(run.finished.wall_s, 0),
        status=status(run.finished, run.ok),
    )


def run_accuracy(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Run ``fractofl centralized``, ``simulate`` (alpha 0.5) and ``simulate`` (IID)."""
    out = PartOutcome()
    sizes = plan.simulation
    common = sizes.rounds_overrides()
    iid = [f"data.root={plan.data_dir / IID_DATA}", "data.partition=iid", *sizes.data_overrides]
    runs = [
        ("centralized", "centralized", [*dirichlet_overrides(plan), *common], False),
        ("federated alpha=0.5", "simulate", [*dirichlet_overrides(plan), *common], True),
        ("federated IID", "simulate", [*iid, *common], True),
    ]
    central: float | None = None
    rows = []
    for label, subcommand, overrides, federated in runs:
        name = "accuracy-" + label.replace(" ", "-").replace("=", "")
        result = run_fractofl(
            subcommand, overrides, plan.runs_dir, name, plan.logs_dir, plan.timeout_s
        )
        out.record(label, result.finished, result.ok)
        if not federated:
            central = result.final_accuracy
        rows.append(_row(label, result, central, federated))
        out.data[label] = {
            "accuracy": result.final_accuracy,
            "macro_f1": result.final_macro_f1,
            "rounds": result.summary["rounds"] if result.summary else None,
        }
    out.tables.append(markdown_table(rows))
    rounds = sizes.accuracy_rounds or "default (conf)"
    out.notes.append(
        f"{rounds} rounds; 'Acc fed / central' is the final federated test accuracy "
        "divided by the centralized one (same coordinator test set, same epoch budget); "
        "'s / round' here includes the members' federated evaluation and the coordinator's."
    )
    return out
