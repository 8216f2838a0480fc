"""The signed model registry: round trips, tampering refused, atomic publishing."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.model.checkpoint import Checkpoint, save_checkpoint
from fractofl.core.trust.registry import (
    METADATA_FILE,
    MODEL_FILE,
    PUBLIC_KEY_FILE,
    SIGNATURE_FILE,
    ModelRegistry,
    ModelVerificationError,
    RegistryError,
    VersionMetadata,
    load_verified_folder,
)
from fractofl.core.trust.signing import fingerprint


def small_checkpoint(round_number: int = 3, run_id: str = "run-a", seed: int = 0) -> Checkpoint:
    """A real small_cnn checkpoint for 4 classes."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", 4, width=8)
    return Checkpoint(
        architecture="small_cnn",
        arch_args={"width": 8},
        classes=list(DEFAULT_CLASSES),
        preprocessing=default_preprocessing("small_cnn", 32),
        state_dict=model.state_dict(),
        round=round_number,
        run_id=run_id,
        metrics={"test_accuracy": 0.75, "test_loss": 0.6},
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_publish_verify_load_round_trip(registry: ModelRegistry, key: Ed25519PrivateKey) -> None:
    # Prepare
    checkpoint = small_checkpoint()
    batch = torch.randn(2, 1, 32, 32)
    # Execute
    published = registry.publish(checkpoint, config_digest="c0ffee", parent=None, key=key)
    verified = registry.verify(1, key.public_key())
    loaded, meta = registry.load_verified("latest", key.public_key())
    # Assert
    assert published == verified == meta
    assert (meta.version, meta.round, meta.run_id, meta.parent) == (1, 3, "run-a", None)
    assert meta.classes == DEFAULT_CLASSES and meta.signer == fingerprint(key.public_key())
    assert meta.metrics == {"test_accuracy": 0.75, "test_loss": 0.6}
    folder = registry.root / "v000001"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MODEL_FILE, METADATA_FILE, SIGNATURE_FILE]
    )
    assert stat.S_IMODE(folder.stat().st_mode) & 0o055 == 0o055  # members can read it
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044 for p in folder.iterdir())
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(batch), checkpoint.build_model()(batch))


@pytest.mark.parametrize("spec", [1, "1", "v000001", "v1", "latest"])
def test_versions_are_named_many_ways(
    registry: ModelRegistry, key: Ed25519PrivateKey, spec: int | str
) -> None:
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    assert registry.load_verified(spec, key.public_key())[1].version == 1


def test_metadata_round_trips_in_memory_and_on_disk(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Execute
    published = registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    on_disk = (registry.root / "v000001" / METADATA_FILE).read_bytes()
    # Assert
    assert VersionMetadata.from_dict(published.to_dict()) == published
    assert VersionMetadata.from_dict(json.loads(on_disk)).to_dict() == json.loads(on_disk)
    assert registry.metadata(1) == published == registry.versions()[0]
    assert (
        on_disk == json.dumps(json.loads(on_disk), sort_keys=True, separators=(",", ":")).encode()
    )


def test_metadata_with_missing_or_unknown_keys_is_refused() -> None:
    values = {
        "format": 1,
        "version": 1,
        "round": 1,
        "run_id": "r",
        "config_digest": "d",
        "metrics": {},
        "classes": ["a", "b"],
        "preprocessing": {},
        "architecture": "small_cnn",
        "arch_args": {},
        "created": "2026-01-01T00:00:00+00:00",
        "parent": None,
        "weights_sha256": "0" * 64,
        "signer": "SHA256:x",
    }
    assert VersionMetadata.from_dict(values).to_dict() == values
    with pytest.raises(RegistryError, match=r"missing keys \['round'\]"):
        VersionMetadata.from_dict({k: v for k, v in values.items() if k != "round"})
    with pytest.raises(RegistryError, match=r"unknown keys \['extra'\]"):
        VersionMetadata.from_dict({**values, "extra": 1})
    with pytest.raises(RegistryError, match=r"wrong type for \['version'\]"):
        VersionMetadata.from_dict({**values, "version": "1"})
    # contributors: optional (older versions have none), a list of names when present
    named = {**values, "contributors": ["org1", "org2"]}
    assert VersionMetadata.from_dict(named).contributors == ("org1", "org2")
    assert VersionMetadata.from_dict(named).to_dict() == named
    assert VersionMetadata.from_dict(values).contributors is None
    with pytest.raises(RegistryError, match=r"wrong type for \['contributors'\]"):
        VersionMetadata.from_dict({**values, "contributors": "org1"})
    with pytest.raises(RegistryError, match="wrong type"):
        VersionMetadata.from_dict({**values, "contributors": [1]})


def test_contributors_are_signed_with_the_version(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Execute
    meta = registry.publish(
        small_checkpoint(), config_digest="d", parent=None, key=key, contributors=["b", "a"]
    )
    path = registry.root / meta.name / METADATA_FILE
    signed = json.loads(path.read_bytes())
    signed["contributors"] = ["a"]  # a member removed from the record
    path.write_bytes(json.dumps(signed, sort_keys=True, separators=(",", ":")).encode())
    # Assert
    assert meta.contributors == ("b", "a")
    with pytest.raises(ModelVerificationError):
        registry.verify(meta.version, key.public_key())


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_flipped_byte_in_the_weights_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey, where: str
) -> None:
    # Prepare
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    model = registry.root / "v000001" / MODEL_FILE
    size = model.stat().st_size
    _flip_byte(model, {"start": 0, "middle": size // 2, "end": size - 1}[where])
    # Execute / Assert
    with pytest.raises(ModelVerificationError, match="v000001: weights changed after signing"):
        registry.load_verified(1, key.public_key())


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_flipped_byte_in_the_metadata_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey, where: str
) -> None:
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    metadata = registry.root / "v000001" / METADATA_FILE
    size = metadata.stat().st_size
    _flip_byte(metadata, {"start": 0, "middle": size // 2, "end": size - 1}[where])
    with pytest.raises(ModelVerificationError, match="v000001: metadata or signature changed"):
        registry.load_verified(1, key.public_key())


def test_edited_metadata_that_is_still_valid_json_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    metadata = registry.root / "v000001" / METADATA_FILE
    metadata.write_text(
        metadata.read_text().replace('"test_accuracy":0.75', '"test_accuracy":0.99')
    )
    with pytest.raises(ModelVerificationError, match="metadata or signature changed"):
        registry.verify(1, key.public_key())


def test_a_flipped_signature_byte_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    _flip_byte(registry.root / "v000001" / SIGNATURE_FILE, 10)
    with pytest.raises(ModelVerificationError, match="metadata or signature changed"):
        registry.verify(1, key.public_key())


def test_an_unsigned_model_is_refused(registry: ModelRegistry, key: Ed25519PrivateKey) -> None:
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    (registry.root / "v000001" / SIGNATURE_FILE).unlink()
    with pytest.raises(ModelVerificationError, match="v000001: unsigned"):
        registry.load_verified(1, key.public_key())


def test_a_model_signed_by_another_key_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare
    intruder = Ed25519PrivateKey.generate()
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=intruder)
    # Execute / Assert: the message names both keys
    with pytest.raises(ModelVerificationError, match="signed by another key") as refused:
        registry.load_verified(1, key.public_key())
    assert fingerprint(key.public_key()) in str(refused.value)
    assert fingerprint(intruder.public_key()) in str(refused.value)


def test_signed_metadata_that_disagrees_with_the_checkpoint_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare: a correctly signed metadata file whose round is not the checkpoint's
    published = registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    wrong = replace(published, round=99).to_json_bytes()
    folder = registry.root / "v000001"
    (folder / METADATA_FILE).write_bytes(wrong)
    (folder / SIGNATURE_FILE).write_bytes(key.sign(wrong))
    # Execute / Assert
    with pytest.raises(ModelVerificationError, match=r"disagree.*round: 99 vs 3"):
        registry.verify(1, key.public_key())


def test_a_version_folder_copied_to_another_number_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    shutil.copytree(registry.root / "v000001", registry.root / "v000007")
    with pytest.raises(ModelVerificationError, match="for version v000001, not v000007"):
        registry.load_verified("latest", key.public_key())


def test_unknown_versions_list_the_available_ones(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    with pytest.raises(RegistryError, match="has no versions"):
        registry.load_verified("latest", key.public_key())
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    with pytest.raises(RegistryError, match=r"no version v000004 .* available: v000001"):
        registry.load_verified(4, key.public_key())
    with pytest.raises(RegistryError, match="not a number, vNNNNNN or 'latest'"):
        registry.metadata("newest")


def test_parents_link_versions_and_latest_filters_by_run(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Execute
    first = registry.publish(small_checkpoint(1), config_digest="d", parent=None, key=key)
    second = registry.publish(small_checkpoint(2), config_digest="d", parent=1, key=key)
    other = registry.publish(
        small_checkpoint(1, run_id="run-b"), config_digest="e", parent=None, key=key
    )
    # Assert
    assert [m.version for m in registry.versions()] == [1, 2, 3]
    assert (first.parent, second.parent, other.parent) == (None, 1, None)
    assert registry.latest() == other and registry.latest("run-a") == second
    assert registry.metadata(registry.latest("run-a").parent or 0) == first
    with pytest.raises(RegistryError, match="no version v000009"):
        registry.publish(small_checkpoint(), config_digest="d", parent=9, key=key)
    with pytest.raises(RegistryError, match="no version of run 'run-z'"):
        registry.latest("run-z")


def test_listing_skips_a_damaged_version_that_metadata_reports(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    registry.publish(small_checkpoint(1), config_digest="d", parent=None, key=key)
    registry.publish(small_checkpoint(2), config_digest="d", parent=1, key=key)
    (registry.root / "v000002" / METADATA_FILE).write_text("{not json")
    assert [m.version for m in registry.versions()] == [1]
    assert registry.latest().version == 1
    with pytest.raises(RegistryError, match=r"v000002/metadata\.json is unreadable"):
        registry.metadata(2)


class _FailsWhenSaved(torch.Tensor):
    """A tensor whose serialisation fails: torch.save dies after writing part of the file."""

    def __reduce_ex__(self, protocol: object) -> object:
        raise OSError("No space left on device (simulated)")


def test_a_publish_that_fails_part_way_leaves_nothing(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare: the last tensor cannot be written, so model.pt is half-written when it fails
    broken = small_checkpoint()
    broken.state_dict = {**broken.state_dict, "zz": torch.zeros(3).as_subclass(_FailsWhenSaved)}
    # Execute
    with pytest.raises(OSError, match="No space left"):
        registry.publish(broken, config_digest="d", parent=None, key=key)
    # Assert: no version and no temporary, and the next publish takes number 1
    assert list(registry.root.iterdir()) == []
    assert (
        registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key).version == 1
    )
    registry.verify(1, key.public_key())


def test_a_publisher_killed_before_the_rename_leaves_no_visible_version(
    tmp_path: Path, registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare: a real process that dies (os._exit) once every file is written
    checkpoint_path = save_checkpoint(small_checkpoint(), tmp_path / "ck.pt")
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        import fractofl.core.trust.registry as registry_module
        from fractofl.core.model.checkpoint import load_checkpoint

        registry_module._rename_if_free = lambda source, target: os._exit(9)
        registry_module.ModelRegistry(Path({str(registry.root)!r})).publish(
            load_checkpoint(Path({str(checkpoint_path)!r})),
            config_digest="d", parent=None, key=Ed25519PrivateKey.generate(),
        )
        """
    )
    # Execute
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    # Assert
    assert crashed.returncode == 9, crashed.stderr.decode()
    leftovers = list(registry.root.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".")
    assert registry.version_numbers() == [] and registry.versions() == []
    assert (
        registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key).version == 1
    )


def test_concurrent_publishers_get_distinct_versions(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare
    checkpoints = [small_checkpoint(n) for n in range(1, 7)]
    errors: list[BaseException] = []

    def publish(batch: list[Checkpoint]) -> None:
        try:
            for checkpoint in batch:
                registry.publish(checkpoint, config_digest="d", parent=None, key=key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(checkpoints[i::2],)) for i in range(2)]
    # Execute
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Assert: six versions, each verifying, with every round exactly once
    assert errors == []
    assert registry.version_numbers() == [1, 2, 3, 4, 5, 6]
    rounds = sorted(registry.verify(n, key.public_key()).round for n in range(1, 7))
    assert rounds == [1, 2, 3, 4, 5, 6]


def test_export_copies_a_verified_version_with_its_public_key(
    tmp_path: Path, registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    # Prepare
    published = registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    out = tmp_path / "export"
    # Execute
    registry.export("latest", out, key.public_key())
    # Assert
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODEL_FILE, METADATA_FILE, SIGNATURE_FILE, PUBLIC_KEY_FILE]
    )
    assert load_verified_folder(out, key.public_key())[1] == published
    assert (out / PUBLIC_KEY_FILE).read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(RegistryError, match="refusing to overwrite"):
        registry.export(1, out, key.public_key())


def test_export_refuses_a_tampered_version(
    tmp_path: Path, registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    registry.publish(small_checkpoint(), config_digest="d", parent=None, key=key)
    _flip_byte(registry.root / "v000001" / MODEL_FILE, 100)
    with pytest.raises(ModelVerificationError, match="weights changed"):
        registry.export(1, tmp_path / "export", key.public_key())
    assert not (tmp_path / "export").exists()
