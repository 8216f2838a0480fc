"""Every completed round's global model, published to the registry as a signed version,
and the registry pruned to its retention policy after each publish."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from fractofl.core.config.run_config import RunConfig, check_retention, config_digest
from fractofl.core.learning.calibration import Calibration
from fractofl.core.learning.train_choices import BALANCED_SOFTMAX
from fractofl.core.model.factory import checkpoint_for
from fractofl.core.trust.registry import (
    BALANCED_SOFTMAX_FLOOR_METRIC,
    SPLIT_SEED_METRIC,
    VAL_FRACTION_METRIC,
    ModelRegistry,
    RegistryError,
    VersionMetadata,
)
from fractofl.core.trust.retention import megabytes, prune, remove_stale_folders
from fractofl.core.trust.signing import ensure_signing_key
from fractofl.server.recorder import RoundRow

log = logging.getLogger("fractofl")


class RoundPublisher:
    """Signs and stores a run's global model after each round; versions chain by parent."""

    def __init__(
        self,
        cfg: RunConfig,
        run_id: str,
        calibration_of: Callable[[dict[str, torch.Tensor]], Calibration] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.calibration_of = calibration_of
        """Fits each version's temperature on the coordinator's test set (signed with it)."""
        check_retention(cfg.registry.retention)  # a bad setting fails before round 1
        self.registry = ModelRegistry(Path(cfg.registry.root))
        self.key = ensure_signing_key(cfg.registry)
        self._digest = config_digest(cfg)
        stale = remove_stale_folders(self.registry.root)
        if stale:
            log.info(
                "registry %s: removed %d folder(s) left by crashed publishes or prunes: %s",
                self.registry.root,
                len(stale),
                ", ".join(p.name for p in stale),
            )

    def _version_of_round(self, server_round: int) -> VersionMetadata | None:
        found = [
            meta
            for meta in self.registry.versions()
            if meta.run_id == self.run_id and meta.round == server_round
        ]
        return found[-1] if found else None

    def publish(
        self,
        server_round: int,
        arrays: ArrayRecord,
        row: RoundRow,
        contributors: Sequence[str] | None = None,
    ) -> VersionMetadata:
        """Publish ``arrays`` as round ``server_round``'s model; its parent is the version
        of the round before it in this run (none for round 1). ``contributors``, the
        members whose updates this round aggregated, are signed with the version together
        with its parent's: every member whose update is in the model."""
        previous = self._version_of_round(server_round - 1)
        if contributors is not None:
            earlier = previous.contributors if previous and previous.contributors else ()
            contributors = sorted({*earlier, *contributors})
        state = arrays.to_torch_state_dict()
        metrics = {
            **row.test_metrics(),
            SPLIT_SEED_METRIC: float(self.cfg.seed),
            VAL_FRACTION_METRIC: self.cfg.data.val_fraction,
        }
        if self.cfg.train.loss == BALANCED_SOFTMAX:
            metrics[BALANCED_SOFTMAX_FLOOR_METRIC] = self.cfg.train.balanced_softmax_floor
        if self.calibration_of is not None:
            calibration = self.calibration_of(state)
            metrics |= calibration.metrics()
            log.info(
                "round %d: temperature %.3f; expected calibration error %.3f, %.3f calibrated",
                server_round,
                calibration.temperature,
                calibration.ece,
                calibration.ece_calibrated,
            )
        checkpoint = checkpoint_for(self.cfg, state, server_round, self.run_id, metrics)
        parent = previous.version if previous else None
        try:
            meta = self.registry.publish(
                checkpoint,
                config_digest=self._digest,
                parent=parent,
                key=self.key,
                contributors=contributors,
            )
        except RegistryError:
            if parent is None or parent in self.registry.version_numbers():
                raise
            # Another process pruned the parent since it was looked up: provenance
            # loses one link, the round's model is not lost.
            log.warning(
                "round %d: parent version %d was removed meanwhile; publishing without one",
                server_round,
                parent,
            )
            meta = self.registry.publish(
                checkpoint,
                config_digest=self._digest,
                parent=None,
                key=self.key,
                contributors=contributors,
            )
        log.info("round %d: published model version %d (%s)", server_round, meta.version, meta.name)
        if self.cfg.registry.retention.prune_after_publish:
            self.prune()
        return meta

    def prune(self) -> None:
        """Apply the retention policy; a failure is logged and nothing is removed, the
        run goes on."""
        try:
            result = prune(self.registry, self.cfg.registry.retention)
        except (RegistryError, OSError) as exc:
            log.warning("registry retention skipped, nothing removed: %s", exc)
            return
        if result.removed:
            log.info(
                "registry retention: removed %s (%s freed); kept %d version(s)",
                ", ".join(d.name for d in result.removed),
                megabytes(result.bytes_freed),
                len(result.plan.kept),
            )

    def ensure_published(
        self, server_round: int, arrays: ArrayRecord, row: RoundRow
    ) -> VersionMetadata:
        """The version of ``server_round``, published now if the coordinator stopped
        between checkpointing the round and publishing it."""
        existing = self._version_of_round(server_round)
        return existing or self.publish(server_round, arrays, row)
