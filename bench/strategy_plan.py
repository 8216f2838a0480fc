"""What the strategies benchmark runs: the full plan for RESULTS.md and a quick smoke test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ALL_STRATEGIES: tuple[str, ...] = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
)
GUARDED_STRATEGIES: tuple[str, ...] = ("fedavg", "fedmedian", "krum")
QUICK_STRATEGIES: tuple[str, ...] = ("fedavg", "fedmedian", "krum")
MEMBERS = 5
ALPHA = 0.5


@dataclass(frozen=True)
class StrategyPlan:
    """Sizes and folders of one strategies-benchmark run."""

    mode: str
    work: Path
    rounds: int
    strategies: tuple[str, ...]
    guarded: tuple[str, ...]
    data_overrides: tuple[str, ...]
    aggregation_updates: int
    aggregation_repeats: int
    timeout_s: float

    @property
    def data_root(self) -> Path:
        """The one synthetic set (5 members, alpha 0.5) every simulation of the run uses."""
        return self.work / "data" / f"members{MEMBERS}-alpha05"

    @property
    def runs_dir(self) -> Path:
        """fractofl run folders (output.root)."""
        return self.work / "runs"

    @property
    def logs_dir(self) -> Path:
        """One log file per subprocess."""
        return self.work / "logs"

    def base_overrides(self) -> list[str]:
        """Data, members and rounds shared by every run (the split is the same for all)."""
        return [
            f"data.root={self.data_root}",
            f"federation.members={MEMBERS}",
            f"data.alpha={ALPHA}",
            f"federation.rounds={self.rounds}",
            *self.data_overrides,
        ]


def make_strategy_plan(quick: bool, work_root: Path) -> StrategyPlan:
    """The full plan (10 strategies, 8 rounds) or the quick one (3 strategies, 2 rounds)."""
    if quick:
        return StrategyPlan(
            mode="quick",
            work=(work_root / "strategies-quick").resolve(),
            rounds=2,
            strategies=QUICK_STRATEGIES,
            guarded=("fedavg",),
            data_overrides=("data.synth.per_class=40", "data.synth.test_per_class=10"),
            aggregation_updates=10,
            aggregation_repeats=2,
            timeout_s=900.0,
        )
    return StrategyPlan(
        mode="full",
        work=(work_root / "strategies-full").resolve(),
        rounds=8,
        strategies=ALL_STRATEGIES,
        guarded=GUARDED_STRATEGIES,
        data_overrides=(),
        aggregation_updates=10,
        aggregation_repeats=7,
        timeout_s=1800.0,
    )
