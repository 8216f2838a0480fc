"""The synthetic data set a run config asks for, generated once and then reused."""

from __future__ import annotations

import logging
from pathlib import Path

from fractofl.cli.progress import Progress
from fractofl.core.config.run_config import RunConfig
from fractofl.core.synth.dataset import SynthSpec, generate_dataset, is_generated, member_dir
from fractofl.core.synth.style import SynthStyle

log = logging.getLogger("fractofl")


def synth_spec(cfg: RunConfig) -> SynthSpec:
    """The generator spec of ``data`` and ``federation.members``."""
    return SynthSpec(
        classes=tuple(cfg.data.classes),
        members=cfg.federation.members,
        partition=cfg.data.partition,
        alpha=cfg.data.alpha,
        per_class=cfg.data.synth.per_class,
        test_per_class=cfg.data.synth.test_per_class,
        seed=cfg.data.synth.seed,
        min_per_member=cfg.data.min_per_member,
        style=SynthStyle(**cfg.data.synth.style),
    )


def ensure_synthetic_data(cfg: RunConfig) -> Path:
    """Generate the synthetic set under ``data.root`` unless it is already there."""
    root = Path(cfg.data.root)
    spec = synth_spec(cfg)
    if is_generated(root, spec):
        log.info("reusing synthetic data set in %s", root)
        return root
    log.info(
        "generating synthetic SEM data set in %s: %d members, %s split (alpha=%s), "
        "%d train + %d test images per class",
        root,
        spec.members,
        spec.partition,
        spec.alpha,
        spec.per_class,
        spec.test_per_class,
    )
    manifest = generate_dataset(root, spec, progress=Progress("synth"))
    for folder, counts in manifest["counts"].items():
        log.info("  %-22s %s", folder, " ".join(f"{k}={v}" for k, v in counts.items()))
    return root


def simulated_member_dirs(cfg: RunConfig) -> list[Path]:
    """The ImageFolder trees of the simulated members."""
    return [member_dir(Path(cfg.data.root), m) for m in range(cfg.federation.members)]
