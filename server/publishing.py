"""Every completed round's global model, published to the registry as a signed version."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import ArrayRecord

from fractofl.core.config.run_config import RunConfig, config_digest
from fractofl.core.model.factory import checkpoint_for
from fractofl.core.trust.registry import ModelRegistry, VersionMetadata
from fractofl.core.trust.signing import ensure_signing_key
from fractofl.server.recorder import RoundRow

log = logging.getLogger("fractofl")


class RoundPublisher:
    """Signs and stores a run's global model after each round; versions chain by parent."""

    def __init__(self, cfg: RunConfig, run_id: str) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.registry = ModelRegistry(Path(cfg.registry.root))
        self.key = ensure_signing_key(cfg.registry)
        self._digest = config_digest(cfg)

    def _version_of_round(self, server_round: int) -> VersionMetadata | None:
        found = [
            meta
            for meta in self.registry.versions()
            if meta.run_id == self.run_id and meta.round == server_round
        ]
        return found[-1] if found else None

    def publish(self, server_round: int, arrays: ArrayRecord, row: RoundRow) -> VersionMetadata:
        """Publish ``arrays`` as round ``server_round``'s model; its parent is the version
        of the round before it in this run (none for round 1)."""
        previous = self._version_of_round(server_round - 1)
        checkpoint = checkpoint_for(
            self.cfg, arrays.to_torch_state_dict(), server_round, self.run_id, row.test_metrics()
        )
        meta = self.registry.publish(
            checkpoint,
            config_digest=self._digest,
            parent=previous.version if previous else None,
            key=self.key,
        )
        log.info("round %d: published model version %d (%s)", server_round, meta.version, meta.name)
        return meta

    def ensure_published(
        self, server_round: int, arrays: ArrayRecord, row: RoundRow
    ) -> VersionMetadata:
        """The version of ``server_round``, published now if the coordinator stopped
        between checkpointing the round and publishing it."""
        existing = self._version_of_round(server_round)
        return existing or self.publish(server_round, arrays, row)
