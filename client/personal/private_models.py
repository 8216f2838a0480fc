"""A member's private registry: its local-only baselines and personalized models, signed
with the member's own Ed25519 key and kept in its member folder. Nothing here is sent;
the member serves them on its own endpoint (``fractofl serve local`` with this registry
and this key, which :func:`serve_command` prints)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fractofl.core.model.checkpoint import Checkpoint
from fractofl.core.trust.registry import ModelRegistry, VersionMetadata
from fractofl.core.trust.signing import (
    create_key_pair,
    fingerprint,
    load_private_key,
    load_public_key,
    passphrase_from_env,
)

log = logging.getLogger("fractofl")

PRIVATE_MODELS_DIR = "models"  # deployment.member_dir/models: the member's own registry
PRIVATE_KEY_FILE = "models.key"  # deployment.member_dir/models.key: signs them (0600)
PRIVATE_PUBLIC_KEY_FILE = "models.pub"

BASELINE = "baseline"
PERSONAL = "personal"
KINDS = (BASELINE, PERSONAL)


def private_run_id(kind: str, global_run_id: str) -> str:
    """The run id of a member's own model made beside run ``global_run_id``."""
    return f"{kind}-{global_run_id}"


@dataclass(frozen=True)
class PrivateModels:
    """The member's registry of its own models and the key pair that signs them."""

    registry: ModelRegistry
    key_path: Path
    public_key_path: Path
    passphrase_env: str

    @classmethod
    def of_member(cls, member_dir: Path, passphrase_env: str) -> PrivateModels:
        """The private registry in ``member_dir`` (created on first publish)."""
        return cls(
            ModelRegistry(member_dir / PRIVATE_MODELS_DIR),
            member_dir / PRIVATE_KEY_FILE,
            member_dir / PRIVATE_PUBLIC_KEY_FILE,
            passphrase_env,
        )

    def _signing_key(self) -> Ed25519PrivateKey:
        passphrase = passphrase_from_env(self.passphrase_env)
        if not self.key_path.exists():
            public = create_key_pair(self.key_path, self.public_key_path, passphrase)
            log.info(
                "created this member's own signing key %s (0600) for its private models, "
                "%s; it never leaves this machine",
                self.key_path,
                fingerprint(public),
            )
        return load_private_key(self.key_path, passphrase, passphrase_env=self.passphrase_env)

    def trusted(self) -> Ed25519PublicKey:
        """The member's own public key, which its private models verify against."""
        return load_public_key(self.public_key_path)

    def publish(self, checkpoint: Checkpoint, global_meta: VersionMetadata) -> VersionMetadata:
        """Sign and store one of the member's own models, made beside ``global_meta``."""
        return self.registry.publish(
            checkpoint,
            config_digest=global_meta.config_digest,
            parent=None,
            key=self._signing_key(),
        )

    def latest(self, kind: str, global_run_id: str) -> tuple[Checkpoint, VersionMetadata] | None:
        """The newest verified model of ``kind`` made beside run ``global_run_id``; None
        when there is none."""
        if not self.registry.root.is_dir():
            return None
        wanted = private_run_id(kind, global_run_id)
        for meta in reversed(self.registry.versions()):
            if meta.run_id == wanted:
                return self.registry.load_verified(meta.name, self.trusted())
        return None

    def serve_command(self, version: str) -> str:
        """The command that serves one of these models on the member's own endpoint."""
        return (
            f"fractofl serve local {version} registry.root={self.registry.root} "
            f"registry.trusted_public_key={self.public_key_path}"
        )
