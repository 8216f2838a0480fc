"""What the benchmark runs: the full plan that goes into RESULTS.md and a quick smoke test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# 50 members need a pool whose Dirichlet(0.5) split gives each of them a few images:
# 200 per class and 4 per member succeeds for seed 7; 120 per class does not.
SCALE_FULL: tuple[str, ...] = (
    "+data.synth.style.image_size=32",
    "model.image_size=32",
    "data.synth.per_class=200",
    "data.synth.test_per_class=20",
    "data.min_per_member=4",
    "train.local_epochs=1",
)
SCALE_QUICK: tuple[str, ...] = (
    "+data.synth.style.image_size=32",
    "model.image_size=32",
    "data.synth.per_class=40",
    "data.synth.test_per_class=10",
    "data.min_per_member=4",
    "train.local_epochs=1",
)


@dataclass(frozen=True)
class Plan:
    """Sizes and folders of one benchmark run."""

    mode: str
    work: Path
    data_overrides: tuple[str, ...]
    accuracy_rounds: int | None
    cost_rounds: int
    scale_members: int
    scale_overrides: tuple[str, ...]
    timeout_s: float

    @property
    def data_dir(self) -> Path:
        """Synthetic data sets (one per split / size)."""
        return self.work / "data"

    @property
    def runs_dir(self) -> Path:
        """fractofl run folders (output.root)."""
        return self.work / "runs"

    @property
    def logs_dir(self) -> Path:
        """One log file per subprocess."""
        return self.work / "logs"

    def rounds_overrides(self) -> list[str]:
        """``federation.rounds`` for part (a), or nothing to keep the config default."""
        return [] if self.accuracy_rounds is None else [f"federation.rounds={self.accuracy_rounds}"]


def make_plan(quick: bool, work_root: Path) -> Plan:
    """The full plan (config defaults, 50-member scale test) or the quick one."""
    if quick:
        return Plan(
            mode="quick",
            work=(work_root / "quick").resolve(),
            data_overrides=("data.synth.per_class=40", "data.synth.test_per_class=10"),
            accuracy_rounds=2,
            cost_rounds=2,
            scale_members=10,
            scale_overrides=SCALE_QUICK,
            timeout_s=900.0,
        )
    return Plan(
        mode="full",
        work=(work_root / "full").resolve(),
        data_overrides=(),
        accuracy_rounds=None,
        cost_rounds=3,
        scale_members=50,
        scale_overrides=SCALE_FULL,
        timeout_s=3600.0,
    )
