"""The benchmark's parts, in the order the driver runs them.

Each part is a function ``run(plan, shared) -> PartOutcome`` in a module of this folder,
imported only when the part runs (several import torch or Flower). ``shared`` carries
results from one part to a later one in the same invocation: ``byzantine`` shows the
clean accuracies of ``strategies``, and ``compression`` reuses its FedAvg run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from outcome import PartOutcome
from plan import Plan

Shared = dict[str, object]
PartRunner = Callable[[Plan, Shared], PartOutcome]


@dataclass(frozen=True)
class Part:
    """A named part: its section's title and where its runner lives."""

    name: str
    title: str
    runner: str  # "module:function" inside this package

    def load(self) -> PartRunner:
        """The part's runner (imports its module)."""
        module, function = self.runner.split(":")
        runner: PartRunner = getattr(importlib.import_module(f"parts.{module}"), function)
        return runner


PARTS: tuple[Part, ...] = (
    Part("accuracy", "Accuracy: federated against centralized", "accuracy:run_accuracy"),
    Part("cost", "Framework cost: a fractofl round against a plain Flower round", "cost:run_cost"),
    Part("scale", "Scale: peak memory with many members", "scale:run_scale"),
    Part("strategies", "Strategies against centralized", "strategies:run_strategies"),
    Part("byzantine", "One Byzantine member of five", "strategies:run_byzantine"),
    Part("compression", "FedAvg with update compression", "compression:run_compression"),
    Part("aggregation", "Aggregation time against a memory copy", "aggregation:run_aggregation"),
    Part(
        "coordinator",
        "Coordinator memory: streamed against gathered updates",
        "coordinator:run_coordinator",
    ),
    Part(
        "serving", "Serving: local endpoint against the in-process forward", "serving:run_serving"
    ),
    Part(
        "worst_request",
        "Serving: memory and time of the worst request within the limits",
        "worst_request:run_worst_request",
    ),
    Part(
        "large_image",
        "Serving: a 24 MiB SEM TIFF through a 6 MiB endpoint",
        "large_image:run_large_image",
    ),
    Part(
        "federation",
        "Federation: simulation against the Deployment Engine",
        "federation:run_federation",
    ),
    Part(
        "front",
        "Coordinator front: members through nginx against direct to the SuperLink",
        "front:run_front",
    ),
    Part(
        "overhead",
        "Per message: ClientApp start to the first training step",
        "overhead:run_overhead",
    ),
    Part(
        "members",
        "Real members: image preparation, memory and physical scale",
        "members:run_members",
    ),
    Part(
        "member_rounds",
        "Member-sized rounds: simulation against the Deployment Engine",
        "members:run_member_rounds",
    ),
    Part(
        "personal",
        "Does joining pay off: federated against centralized over seeds, each member's gain, "
        "instrument shift",
        "personal:run_personal",
    ),
    Part(
        "tuning",
        "Tuning: FedProx's mu, server learning rates and FedAvgM's momentum on our data",
        "tuning:run_tuning",
    ),
    Part(
        "uncertain",
        "Refer to an expert: uncertain answers on fracture and non-fracture images",
        "uncertain:run_uncertain",
    ),
)
PART_NAMES: tuple[str, ...] = tuple(part.name for part in PARTS)


def select_parts(requested: str) -> list[Part]:
    """The parts named in a comma-separated list, in the driver's order (so that a part
    runs after those it reuses); ValueError naming the valid ones for an unknown name."""
    names = {name.strip() for name in requested.split(",") if name.strip()}
    valid = ", ".join(PART_NAMES)
    unknown = sorted(names - set(PART_NAMES))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; choose from {valid}")
    if not names:
        raise ValueError(f"no part named; choose from {valid}")
    return [part for part in PARTS if part.name in names]
