"""The global model a member measures itself against or personalizes: a version the
coordinator exported (``fractofl models export``) or one of a registry folder, verified
against the consortium's public key before it is used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fractofl.core.config.run_config import RunConfig
from fractofl.core.model.checkpoint import Checkpoint
from fractofl.core.trust.registry import (
    METADATA_FILE,
    ModelRegistry,
    RegistryError,
    VersionMetadata,
    load_verified_folder,
)
from fractofl.core.trust.signing import load_public_key
from fractofl.core.trust.version_choice import chosen_version


@dataclass(frozen=True)
class GlobalVersion:
    """A verified global model and where it came from (for messages)."""

    checkpoint: Checkpoint
    meta: VersionMetadata
    source: str

    @property
    def label(self) -> str:
        """``v000004 (run 1a2b3c4d, round 4)``."""
        return f"{self.meta.name} (run {self.meta.run_id}, round {self.meta.round})"


def open_global_version(source: str, cfg: RunConfig) -> GlobalVersion:
    """``source``: an exported version folder, or a version of ``registry.root`` (number,
    vNNNNNN, latest or best), verified with ``registry.trusted_public_key``."""
    trusted = load_public_key(Path(cfg.registry.trusted_public_key))
    folder = Path(source)
    if folder.is_dir():
        if not (folder / METADATA_FILE).is_file():
            raise RegistryError(
                f"{folder} is a folder without {METADATA_FILE}: not an exported version; "
                "give the folder `fractofl models export` wrote, or a version number"
            )
        checkpoint, meta = load_verified_folder(folder, trusted)
        return GlobalVersion(checkpoint, meta, str(folder))
    registry = ModelRegistry(Path(cfg.registry.root))
    if not registry.root.is_dir():
        raise RegistryError(
            f"{source!r} is neither an exported version folder nor a version of a registry "
            f"(registry.root={registry.root} does not exist); give the folder "
            "`fractofl models export` wrote"
        )
    name = chosen_version(registry, source, cfg.registry.retention)
    checkpoint, meta = registry.load_verified(name, trusted)
    return GlobalVersion(checkpoint, meta, str(registry.folder(name)))
