"""The coordinator's signing key: 0600, encrypted with a passphrase, never overwritten."""

from __future__ import annotations

import base64
import hashlib
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fractofl.core.config.run_config import RegistryConfig
from fractofl.core.trust.signing import (
    SigningKeyError,
    create_key_pair,
    ensure_signing_key,
    fingerprint,
    load_private_key,
    load_public_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fractofl_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the ``fractofl`` logger even after the CLI turned its propagation off."""
    logger = logging.getLogger("fractofl")
    propagate, level = logger.propagate, logger.level
    logger.propagate = True
    logger.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.mark.usefixtures("permissive_umask")
def test_encrypted_key_is_0600_and_loads_with_its_passphrase(tmp_path: Path) -> None:
    # Prepare
    private, public = tmp_path / "keys" / "c.key", tmp_path / "keys" / "c.pub"
    # Execute
    public_key = create_key_pair(private, public, b"correct horse")
    loaded = load_private_key(private, b"correct horse")
    # Assert
    assert _mode(private) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert fingerprint(loaded.public_key()) == fingerprint(public_key)
    assert fingerprint(load_public_key(public)) == fingerprint(public_key)


def test_wrong_or_missing_passphrase_names_the_variable(tmp_path: Path) -> None:
    private = tmp_path / "c.key"
    create_key_pair(private, tmp_path / "c.pub", b"right")
    with pytest.raises(SigningKeyError, match="wrong passphrase in MY_PASS"):
        load_private_key(private, b"wrong", passphrase_env="MY_PASS")
    with pytest.raises(SigningKeyError, match="is encrypted; set the environment variable MY_PASS"):
        load_private_key(private, None, passphrase_env="MY_PASS")


@pytest.mark.usefixtures("permissive_umask")
def test_unencrypted_key_is_still_0600(tmp_path: Path) -> None:
    private = tmp_path / "c.key"
    create_key_pair(private, tmp_path / "c.pub", None)
    assert _mode(private) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    load_private_key(private, None)


def test_existing_keys_are_never_overwritten(tmp_path: Path) -> None:
    # Prepare
    private, public = tmp_path / "c.key", tmp_path / "c.pub"
    create_key_pair(private, public, None)
    before = (private.read_bytes(), public.read_bytes())
    # Execute / Assert: either file existing is enough to refuse
    with pytest.raises(SigningKeyError, match=f"{private} already exists"):
        create_key_pair(private, tmp_path / "other.pub", None)
    with pytest.raises(SigningKeyError, match=f"{public} already exists"):
        create_key_pair(tmp_path / "other.key", public, None)
    assert (private.read_bytes(), public.read_bytes()) == before
    assert not (tmp_path / "other.key").exists() and not (tmp_path / "other.pub").exists()


def test_a_key_readable_by_others_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    private = tmp_path / "c.key"
    create_key_pair(private, tmp_path / "c.pub", None)
    private.chmod(0o644)
    with pytest.raises(SigningKeyError, match=f"permissions 0644.*chmod 600 {private}"):
        load_private_key(private, None)


def test_missing_and_foreign_key_files_are_clear_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    garbage.chmod(0o600)
    with pytest.raises(SigningKeyError, match=r"does not exist.*fractofl keys init"):
        load_private_key(tmp_path / "missing.key", None)
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        load_private_key(garbage, None)
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        load_public_key(garbage)


def test_fingerprint_is_openssh_style(tmp_path: Path) -> None:
    # Prepare
    public_key = create_key_pair(tmp_path / "c.key", tmp_path / "c.pub", None)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # Execute
    printed = fingerprint(public_key)
    # Assert
    expected = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    assert printed == f"SHA256:{expected}" and len(printed) == len("SHA256:") + 43


def test_ensure_signing_key_creates_once_then_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fractofl_log: pytest.LogCaptureFixture
) -> None:
    # Prepare
    monkeypatch.setenv("TEST_FRACTOFL_PASS", "s3cret")
    cfg = RegistryConfig(
        private_key=str(tmp_path / "keys" / "c.key"),
        public_key=str(tmp_path / "keys" / "c.pub"),
        passphrase_env="TEST_FRACTOFL_PASS",
    )
    # Execute
    created = ensure_signing_key(cfg)
    loaded = ensure_signing_key(cfg)
    # Assert
    assert fingerprint(created.public_key()) == fingerprint(loaded.public_key())
    assert Path(cfg.private_key).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    messages = [r.getMessage() for r in fractofl_log.records]
    assert len(messages) == 1  # created once, loaded the second time
    assert cfg.private_key in messages[0] and cfg.public_key in messages[0]
    assert "BEGIN PUBLIC KEY" in messages[0] and "PRIVATE" not in messages[0]


def test_ensure_signing_key_without_creation_or_with_a_foreign_public_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRACTOFL_KEY_PASSPHRASE", raising=False)
    missing = RegistryConfig(
        private_key=str(tmp_path / "none.key"),
        public_key=str(tmp_path / "none.pub"),
        create_key_if_missing=False,
    )
    with pytest.raises(SigningKeyError, match="does not exist"):
        ensure_signing_key(missing)
    assert not Path(missing.private_key).exists()

    create_key_pair(tmp_path / "a.key", tmp_path / "a.pub", None)
    create_key_pair(tmp_path / "b.key", tmp_path / "b.pub", None)
    mixed = RegistryConfig(private_key=str(tmp_path / "a.key"), public_key=str(tmp_path / "b.pub"))
    with pytest.raises(SigningKeyError, match="does not belong to signing key"):
        ensure_signing_key(mixed)
