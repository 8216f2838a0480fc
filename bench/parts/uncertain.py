"""Part uncertain: how often answers say "refer to an expert", on the coordinator's test
images and on images that are not fracture surfaces (made by the program), for the final
version of a default simulation."""

from __future__ import annotations

import json
import sys

from fractofl_cli import fractofl_executable, run_fractofl
from outcome import PartOutcome, StepFailed
from plan import PROGRAMS_DIR, Plan
from proc import bench_env
from report import markdown_grid

from parts.accuracy import dirichlet_overrides


def run_uncertain(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """A default simulation with its own registry; its last version packaged and served
    in process by ``programs/uncertain_rates.py``."""
    out = PartOutcome()
    work = plan.fresh_dir("uncertain")
    keys = work / "keys"
    registry = [
        f"registry.root={work / 'registry'}",
        f"registry.private_key={keys / 'coordinator.key'}",
        f"registry.public_key={keys / 'coordinator.pub'}",
        f"registry.trusted_public_key={keys / 'coordinator.pub'}",
        f"serving.artifacts={work}",
    ]
    overrides = [*dirichlet_overrides(plan), *plan.simulation.rounds_overrides(), *registry]
    run = run_fractofl(
        "simulate", overrides, plan.runs_dir, "uncertain-run", plan.logs_dir, plan.timeout_s
    )
    out.record("simulate", run.finished, run.ok)
    if not run.ok:
        raise StepFailed(f"the simulation failed:\n{run.finished.log_tail()}", out)
    out.run_step(
        "serve package",
        [fractofl_executable(), "serve", "package", "latest", *overrides],
        plan.logs_dir / "uncertain-package.log",
        plan.timeout_s,
        env=bench_env(),
    )
    (artifact,) = work.glob("model-v*.tar.gz")
    model_dir = work / "model"
    model_dir.mkdir()
    out.run_step(
        "extract",
        ["tar", "-xzf", str(artifact), "-C", str(model_dir)],
        plan.logs_dir / "uncertain-extract.log",
        plan.timeout_s,
    )
    (model_dir / "trusted.pub").write_bytes((keys / "coordinator.pub").read_bytes())
    log = plan.logs_dir / "uncertain.log"
    test_dir = plan.data_dir / "alpha05" / "coordinator-test"
    count = "200" if plan.mode == "full" else "10"
    out.run_step(
        "uncertain rates",
        [
            sys.executable,
            str(PROGRAMS_DIR / "uncertain_rates.py"),
            str(model_dir),
            str(test_dir),
            count,
        ],
        log,
        plan.timeout_s,
        cwd=PROGRAMS_DIR,
        env=bench_env(),
    )
    rates = json.loads(log.read_text().strip().splitlines()[-1])
    model = rates.pop("_model")
    rows = [
        [
            kind,
            str(r["images"]),
            f"{100 * r['uncertain']:.1f} %",
            f"{100 * r['low_confidence']:.1f} %",
            f"{100 * r['out_of_distribution']:.1f} %",
        ]
        for kind, r in rates.items()
    ]
    out.tables.append(
        f"Answers of {model['version']} (temperature {model['temperature']:.3f}, energy "
        f"threshold {model['ood_energy_threshold']:.3f}, serving.min_confidence "
        f"{model['min_confidence']}) marked uncertain, by reason:\n\n"
        + markdown_grid(
            ["Images", "Count", "Uncertain", "Low confidence", "Unlike the training images"],
            rows,
        )
    )
    out.notes.append(
        "The non-fracture images are made by bench/programs/uncertain_rates.py (seed 0); "
        "the test images are the coordinator's, which 95 % stay under the energy threshold "
        "by construction (registry.ood_coverage). Each image goes through the artifact's own "
        "decode_input and predict_image."
    )
    out.data = {**rates, "model": model}
    return out
