"""The coordinator's Ed25519 signing key: create, load, fingerprint.

The private key is a PKCS#8 PEM file, encrypted with a passphrase when one is given
and created with 0600 permissions (never readable by others, not even briefly). The
public key is a SubjectPublicKeyInfo PEM file that the coordinator distributes; members
and serving verify published models against it (``registry.trusted_public_key``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fractofl.core.config.run_config import RegistryConfig
from fractofl.core.files.atomic import mode_readable_by_others

log = logging.getLogger("fractofl")

DEFAULT_PASSPHRASE_ENV = RegistryConfig().passphrase_env
_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class SigningKeyError(ValueError):
    """A signing or verification key is missing, unreadable, exposed or of the wrong kind."""


def passphrase_from_env(variable: str) -> bytes | None:
    """The passphrase in environment variable ``variable``; ``None`` when unset or empty."""
    value = os.environ.get(variable, "") if variable else ""
    return value.encode() if value else None


def create_key_pair(
    private_path: Path, public_path: Path, passphrase: bytes | None
) -> Ed25519PublicKey:
    """Create an Ed25519 key pair and return its public key.

    Parameters
    ----------
    private_path
        Where the PKCS#8 PEM private key goes; created with mode 0600, never overwritten.
    public_path
        Where the SubjectPublicKeyInfo PEM public key goes; never overwritten.
    passphrase
        Encrypts the private key (``BestAvailableEncryption``); ``None``: unencrypted.
    """
    for path in (private_path, public_path):
        if path.exists():
            raise SigningKeyError(
                f"{path} already exists; refusing to overwrite a key (models signed with it "
                "would no longer verify). Move it away first or choose another path"
            )
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_key = key.public_key()
    _write_new_file(private_path, private_pem, 0o600)
    try:
        _write_new_file(public_path, public_pem(public_key).encode(), 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return public_key


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (fails if it exists), write, fsync; no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except FileExistsError:
        raise SigningKeyError(f"{path} already exists; refusing to overwrite a key") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def load_private_key(
    path: Path, passphrase: bytes | None, *, passphrase_env: str = DEFAULT_PASSPHRASE_ENV
) -> Ed25519PrivateKey:
    """Load the signing key, refusing a file that others may read.

    ``passphrase_env`` only names the variable in error messages.
    """
    if not path.is_file():
        raise SigningKeyError(
            f"signing key {path} does not exist (registry.private_key); "
            "create one with `fractofl keys init`"
        )
    _refuse_exposed(path)
    data = path.read_bytes()
    encrypted = _ENCRYPTED_PEM in data
    if encrypted and not passphrase:
        raise SigningKeyError(
            f"signing key {path} is encrypted; set the environment variable "
            f"{passphrase_env} to its passphrase"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise SigningKeyError(
                f"cannot decrypt signing key {path}: wrong passphrase in {passphrase_env}?"
            ) from None
        raise SigningKeyError(f"signing key {path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"signing key {path} is a {type(key).__name__}, not an Ed25519 key; "
            "create one with `fractofl keys init`"
        )
    return key


def _refuse_exposed(path: Path) -> None:
    mode = mode_readable_by_others(path)
    if mode is not None:
        raise SigningKeyError(
            f"signing key {path} has permissions {mode:04o}, readable by others; "
            f"restrict it to its owner with: chmod 600 {path}"
        )


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file (``registry.trusted_public_key``)."""
    if not path.is_file():
        raise SigningKeyError(
            f"public key {path} does not exist (registry.trusted_public_key); ask the "
            "coordinator for it (`fractofl keys init` prints it)"
        )
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise SigningKeyError(f"public key {path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"public key {path} is a {type(key).__name__}, not Ed25519")
    return key


def public_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM text."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """OpenSSH-style fingerprint: ``SHA256:`` and the unpadded base64 of the raw key's hash."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def ensure_signing_key(cfg: RegistryConfig) -> Ed25519PrivateKey:
    """Load the coordinator's signing key, creating the pair first when allowed.

    The passphrase comes from the environment variable ``cfg.passphrase_env`` (unset or
    empty: no encryption). A public key file that does not match the private key is an
    error, since members would reject every model signed with it.
    """
    private_path, public_path = Path(cfg.private_key), Path(cfg.public_key)
    passphrase = passphrase_from_env(cfg.passphrase_env)
    if not private_path.exists() and cfg.create_key_if_missing:
        public_key = create_key_pair(private_path, public_path, passphrase)
        how = (
            f"encrypted with the passphrase in {cfg.passphrase_env}"
            if passphrase
            else f"unencrypted; set {cfg.passphrase_env} to encrypt it"
        )
        log.info(
            "created signing key %s (0600, %s) and public key %s (%s); distribute the public "
            "key to members as registry.trusted_public_key:\n%s",
            private_path,
            how,
            public_path,
            fingerprint(public_key),
            public_pem(public_key).rstrip(),
        )
    key = load_private_key(private_path, passphrase, passphrase_env=cfg.passphrase_env)
    if public_path.is_file():
        published = load_public_key(public_path)
        if fingerprint(published) != fingerprint(key.public_key()):
            raise SigningKeyError(
                f"public key {public_path} ({fingerprint(published)}) does not belong to "
                f"signing key {private_path} ({fingerprint(key.public_key())}); members "
                "would reject every model. Fix registry.private_key / registry.public_key"
            )
    return key
