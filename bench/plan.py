"""What the benchmark runs: every part's sizes in the full plan (what RESULTS.md records)
and in a quick smoke test of the harness, and the layout of the work folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROGRAMS_DIR = BENCH_DIR / "programs"

ALL_STRATEGIES: tuple[str, ...] = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedavgm",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
)
# Part tuning: the values around each strategy's default (conf/strategy/*.yaml).
TUNING_SWEEPS: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    ("fedprox", "proximal_mu", (0.01, 0.001)),
    ("fedadam", "eta", (0.01, 0.03)),
    ("fedadagrad", "eta", (0.05, 0.01)),
    ("fedavgm", "server_momentum", (0.9, 0.5)),
)
QUICK_DATA = ("data.synth.per_class=40", "data.synth.test_per_class=10")
STRATEGY_MEMBERS = 5
STRATEGY_ALPHA = 0.5

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
class SimulationSizes:
    """Parts accuracy, cost and scale: 4 members on the default synthetic set."""

    data_overrides: tuple[str, ...]
    accuracy_rounds: int | None  # None: the config default
    cost_rounds: int
    scale_members: int
    scale_overrides: tuple[str, ...]
    resnet_members: int  # part scale: the ResNet-18 simulation's members (one round)

    def rounds_overrides(self) -> list[str]:
        """``federation.rounds`` for the accuracy part, or nothing to keep the default."""
        return [] if self.accuracy_rounds is None else [f"federation.rounds={self.accuracy_rounds}"]


@dataclass(frozen=True)
class StrategySizes:
    """Parts strategies, byzantine, compression and aggregation: 5 members, one split."""

    rounds: int
    strategies: tuple[str, ...]
    guarded: tuple[str, ...]  # run again under attack with the guard's norm test on
    data_overrides: tuple[str, ...]
    aggregation_updates: int
    aggregation_repeats: int
    coordinator_updates: tuple[int, ...]  # part coordinator: updates in one round


@dataclass(frozen=True)
class ServingSizes:
    """Part serving: the model served and the requests sent."""

    model: str
    requests: int  # per path, after the warm-up
    concurrency: int


@dataclass(frozen=True)
class FederationSizes:
    """Part federation: members and rounds of each configuration."""

    members: int
    rounds: int


@dataclass(frozen=True)
class FrontSizes:
    """Part front: members, rounds per run, runs per path, POSTs per request size."""

    members: int
    rounds: int
    repeats: int
    samples: int


@dataclass(frozen=True)
class MemberSizes:
    """Part members: TIFFs prepared, the memory steps, the accuracy set and its model."""

    prepare_images: int
    prepare_size: tuple[int, int]
    memory_steps: tuple[int, ...]
    memory_size: tuple[int, int]
    accuracy_per_class: int  # per member (2 members)
    accuracy_test_per_class: int
    accuracy_size: tuple[int, int]
    accuracy_rounds: int
    round_members: int
    round_per_class: int  # micrographs per class and member in the deployed rounds
    round_size: tuple[int, int]
    round_rounds: int
    pixel_size_um: float = 0.25
    tile: int = 64
    whole_image_size: int = 128


@dataclass(frozen=True)
class PersonalSizes:
    """Part personal: the federated/centralized gap over seeds, gains, instrument shift."""

    members: int
    rounds: int
    seeds: tuple[int, ...]
    alphas: tuple[float, ...]
    data_overrides: tuple[str, ...]
    shift: float = 1.0
    reference_per_class: int = 50  # the consortium reference set's images of each class


@dataclass(frozen=True)
class TuningSizes:
    """Part tuning: (strategy, argument, values) swept on the strategies group's set."""

    sweeps: tuple[tuple[str, str, tuple[float, ...]], ...]
    seed: int = 42  # the config's default, as in part strategies


@dataclass(frozen=True)
class Plan:
    """Sizes and folders of one benchmark invocation."""

    mode: str
    work: Path
    timeout_s: float  # per subprocess
    simulation: SimulationSizes
    strategies: StrategySizes
    serving: ServingSizes
    federation: FederationSizes
    front: FrontSizes
    members: MemberSizes
    personal: PersonalSizes
    tuning: TuningSizes

    @property
    def data_dir(self) -> Path:
        """Synthetic data sets (one per split and size), shared by the parts that simulate."""
        return self.work / "data"

    @property
    def runs_dir(self) -> Path:
        """fractofl run folders (``output.root``), named ``<part>-<run>``."""
        return self.work / "runs"

    @property
    def logs_dir(self) -> Path:
        """One log file per subprocess, named as its run."""
        return self.work / "logs"

    @property
    def strategy_data_root(self) -> Path:
        """The one synthetic set (5 members, alpha 0.5) every strategies-group run uses."""
        return self.data_dir / f"members{STRATEGY_MEMBERS}-alpha05"

    def strategy_overrides(self) -> list[str]:
        """Data, members and rounds shared by every strategies-group run (one split)."""
        return [
            f"data.root={self.strategy_data_root}",
            f"federation.members={STRATEGY_MEMBERS}",
            f"data.alpha={STRATEGY_ALPHA}",
            f"federation.rounds={self.strategies.rounds}",
            *self.strategies.data_overrides,
        ]

    def fresh_dir(self, part: str) -> Path:
        """An empty folder of the part's own (PKI, coordinator state, registry, logs):
        what an earlier invocation left there is removed first."""
        folder = self.work / part
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder


def make_plan(quick: bool, work_root: Path) -> Plan:
    """The full plan (what RESULTS.md records) or the quick smoke test of the harness."""
    if quick:
        return Plan(
            mode="quick",
            work=(work_root / "quick").resolve(),
            timeout_s=900.0,
            simulation=SimulationSizes(QUICK_DATA, 2, 2, 10, SCALE_QUICK, resnet_members=4),
            strategies=StrategySizes(
                rounds=2,
                strategies=("fedavg", "fedmedian", "krum"),
                guarded=("fedavg",),
                data_overrides=QUICK_DATA,
                aggregation_updates=10,
                aggregation_repeats=2,
                coordinator_updates=(10, 20),
            ),
            serving=ServingSizes(model="resnet18", requests=20, concurrency=4),
            federation=FederationSizes(members=2, rounds=1),
            front=FrontSizes(members=2, rounds=1, repeats=1, samples=10),
            members=MemberSizes(
                prepare_images=24,
                prepare_size=(512, 384),
                memory_steps=(8, 16, 32),
                memory_size=(256, 192),
                accuracy_per_class=4,
                accuracy_test_per_class=2,
                accuracy_size=(512, 384),
                accuracy_rounds=1,
                round_members=2,
                round_per_class=2,
                round_size=(256, 192),
                round_rounds=1,
            ),
            personal=PersonalSizes(
                members=3,
                rounds=2,
                seeds=(1, 2),
                alphas=(0.5,),
                data_overrides=QUICK_DATA,
                reference_per_class=4,
            ),
            tuning=TuningSizes(sweeps=(("fedprox", "proximal_mu", (0.001, 0.1)),)),
        )
    return Plan(
        mode="full",
        work=(work_root / "full").resolve(),
        timeout_s=3600.0,
        simulation=SimulationSizes((), None, 3, 50, SCALE_FULL, resnet_members=1000),
        strategies=StrategySizes(
            rounds=8,
            strategies=ALL_STRATEGIES,
            guarded=("fedavg", "fedmedian", "krum"),
            data_overrides=(),
            aggregation_updates=10,
            aggregation_repeats=7,
            coordinator_updates=(10, 100, 1000),
        ),
        serving=ServingSizes(model="resnet18", requests=200, concurrency=8),
        federation=FederationSizes(members=3, rounds=3),
        front=FrontSizes(members=2, rounds=3, repeats=4, samples=60),
        members=MemberSizes(
            prepare_images=2000,
            prepare_size=(2048, 1536),
            memory_steps=(500, 2000, 8000),
            memory_size=(1024, 768),
            accuracy_per_class=40,
            accuracy_test_per_class=15,
            accuracy_size=(1024, 768),
            accuracy_rounds=10,
            round_members=3,
            round_per_class=50,
            round_size=(1024, 768),
            round_rounds=3,
        ),
        personal=PersonalSizes(
            members=STRATEGY_MEMBERS,
            rounds=8,
            seeds=(1, 2, 3),
            alphas=(0.5, 0.1),
            data_overrides=(),
        ),
        tuning=TuningSizes(sweeps=TUNING_SWEEPS),
    )
