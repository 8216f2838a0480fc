"""Signed, versioned model registry: every published global model, verifiable by anyone.

Layout::

    <root>/v000001/model.pt        the checkpoint (:func:`save_checkpoint`)
    <root>/v000001/metadata.json   canonical JSON (sorted keys, no whitespace)
    <root>/v000001/signature       detached Ed25519 signature of metadata.json's bytes

The metadata holds the SHA-256 of ``model.pt``, so one signature covers weights and
metadata. A version is written in a hidden temporary folder, fsynced and renamed into
place: readers never see half a version, and a crash leaves only the hidden folder.
Two publishers never share a number: renaming onto an existing version folder fails
and the loser re-signs for the next number. Models are only loaded after verification
(:meth:`ModelRegistry.load_verified`, :func:`load_verified_folder`). Only ``vNNNNNN``
folders are versions: hidden ones (staging, ``.removing-*``) and files (``in-use.json``,
:mod:`~fractofl.core.trust.pins`) are not; :mod:`~fractofl.core.trust.retention` prunes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fractofl.core.files.atomic import fsync_dir
from fractofl.core.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint_bytes,
    save_checkpoint,
)
from fractofl.core.trust.signing import fingerprint, public_pem

log = logging.getLogger("fractofl")

MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
SIGNATURE_FILE = "signature"
PUBLIC_KEY_FILE = "signer.pub"
METADATA_FORMAT = 1
# A published global version also records how each member split its images into training
# and validation (``seed``, ``data.val_fraction``), so that a member's own comparisons use
# the validation images the global model never trained on.
SPLIT_SEED_METRIC = "split_seed"
VAL_FRACTION_METRIC = "val_fraction"
# And, when its members trained with ``train.loss=balanced_softmax``, that loss's floor: its
# logits then assume every class equally frequent, and a member's personalized copy takes
# on the member's own class frequencies (fractofl.client.personal.class_mix).
BALANCED_SOFTMAX_FLOOR_METRIC = "balanced_softmax_floor"
_VERSION_DIR = re.compile(r"v(\d{6,})")
PUBLISH_PREFIX = ".publish-"  # hidden staging folders of publishes (see retention.py)
_PUBLISH_ATTEMPTS = 100


class RegistryError(ValueError):
    """A registry, version or metadata file is missing or malformed."""


class ModelVerificationError(RegistryError):
    """A model version failed verification; loading it is refused."""


@dataclass(frozen=True)
class VersionMetadata:
    """What is signed about one published model version."""

    version: int
    round: int
    run_id: str
    config_digest: str
    metrics: dict[str, float]
    classes: tuple[str, ...]
    preprocessing: dict[str, Any]
    architecture: str
    arch_args: dict[str, Any]
    created: str
    parent: int | None
    weights_sha256: str
    signer: str
    contributors: tuple[str, ...] | None = None
    """The members whose accepted updates made this model, over every round of its
    lineage (registered names in a real federation, ``partition-N`` in a simulation);
    ``None`` for a version published before they were recorded."""

    @property
    def name(self) -> str:
        """The version folder's name, e.g. ``v000003``."""
        return version_name(self.version)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, inverse of :meth:`from_dict`."""
        values = asdict(self)
        values["classes"] = list(self.classes)
        if self.contributors is None:  # an older version's signed bytes stay as they were
            del values["contributors"]
        else:
            values["contributors"] = list(self.contributors)
        return {"format": METADATA_FORMAT, **values}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VersionMetadata:
        """Rebuild from :meth:`to_dict`'s output, failing on missing or unknown keys."""
        expected = {f.name for f in fields(cls)} | {"format"}
        missing = expected - _OPTIONAL_FIELDS - set(values)
        unknown = set(values) - expected
        if missing or unknown or values["format"] != METADATA_FORMAT:
            raise RegistryError(
                f"not registry metadata of format {METADATA_FORMAT}: missing keys "
                f"{sorted(missing)}, unknown keys {sorted(unknown)}"
            )
        wrong = [
            k for k, kinds in _FIELD_TYPES.items() if k in values and not _is_a(values[k], kinds)
        ]
        lists = [values["classes"], values.get("contributors", [])]
        if wrong or not all(isinstance(item, str) for entries in lists for item in entries):
            raise RegistryError(f"registry metadata has values of the wrong type for {wrong}")
        rest = {k: v for k, v in values.items() if k != "format"}
        if "contributors" in rest:
            rest["contributors"] = tuple(rest["contributors"])
        return cls(**{**rest, "classes": tuple(rest["classes"])})

    def to_json_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no whitespace): the exact bytes that are signed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "round": (int,),
    "run_id": (str,),
    "config_digest": (str,),
    "metrics": (dict,),
    "classes": (list,),
    "preprocessing": (dict,),
    "architecture": (str,),
    "arch_args": (dict,),
    "created": (str,),
    "parent": (int, type(None)),
    "weights_sha256": (str,),
    "signer": (str,),
    "contributors": (list,),
}
_OPTIONAL_FIELDS = frozenset({"contributors"})


def _is_a(value: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def version_name(version: int) -> str:
    """Folder name of a version number: ``3`` -> ``v000003``."""
    return f"v{version:06d}"


class ModelRegistry:
    """The version folders under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ---- reading (metadata unverified: for listing only) ----

    def version_numbers(self) -> list[int]:
        """Published version numbers, ascending (hidden temporary folders ignored)."""
        if not self.root.is_dir():
            return []
        numbers = (_VERSION_DIR.fullmatch(p.name) for p in self.root.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in numbers if m)

    def versions(self) -> list[VersionMetadata]:
        """Metadata of every readable version, ascending; *unverified*, for listing.

        A version whose metadata cannot be read is logged and skipped (``metadata(n)``
        raises for it), so one damaged folder does not stop publishing or listing.
        """
        found = []
        for number in self.version_numbers():
            try:
                found.append(self.metadata(number))
            except RegistryError as exc:
                log.warning("skipping registry version %s: %s", version_name(number), exc)
        return found

    def metadata(self, version: int | str) -> VersionMetadata:
        """One version's metadata as stored; *unverified* (use :meth:`verify` to trust it)."""
        folder = self.folder(version)
        return _read_metadata(folder / METADATA_FILE)

    def latest(self, run_id: str | None = None) -> VersionMetadata:
        """The newest version (of run ``run_id`` when given); *unverified*."""
        for meta in reversed(self.versions()):
            if run_id is None or meta.run_id == run_id:
                return meta
        of_run = f" of run {run_id!r}" if run_id is not None else ""
        raise RegistryError(f"registry {self.root} has no version{of_run}; publish one first")

    def folder(self, version: int | str) -> Path:
        """The folder of ``version`` (an int, ``"latest"``, ``"v000003"`` or ``"3"``)."""
        numbers = self.version_numbers()
        if version == "latest":
            if not numbers:
                raise RegistryError(f"registry {self.root} has no versions; publish one first")
            return self.root / version_name(numbers[-1])
        number = _parse_version(version)
        if number not in numbers:
            available = ", ".join(version_name(n) for n in numbers) or "none, it is empty"
            raise RegistryError(
                f"no version {version_name(number)} in registry {self.root}; available: {available}"
            )
        return self.root / version_name(number)

    # ---- verified access: the only way a registry model is loaded ----

    def verify(self, version: int | str, trusted: Ed25519PublicKey) -> VersionMetadata:
        """Check signature, weights hash and consistency; raise :class:`ModelVerificationError`."""
        return self.load_verified(version, trusted)[1]

    def load_verified(
        self, version: int | str, trusted: Ed25519PublicKey
    ) -> tuple[Checkpoint, VersionMetadata]:
        """Verify a version against the trusted key, then load its checkpoint."""
        folder = self.folder(version)
        checkpoint, meta = load_verified_folder(folder, trusted)
        if version_name(meta.version) != folder.name:
            raise ModelVerificationError(
                f"{folder}: the signed metadata is for version {meta.name}, not {folder.name} "
                "(a version folder was copied or renamed); refusing to load it"
            )
        return checkpoint, meta

    def export(self, version: int | str, out_dir: Path, trusted: Ed25519PublicKey) -> Path:
        """Verify a version, then copy its files and the public key PEM into ``out_dir``.

        The copy is verified again, so what leaves the registry is what was checked.
        """
        folder = self.folder(version)
        self.verify(folder.name, trusted)
        names = (MODEL_FILE, METADATA_FILE, SIGNATURE_FILE, PUBLIC_KEY_FILE)
        clashes = [str(out_dir / n) for n in names if (out_dir / n).exists()]
        if clashes:
            raise RegistryError(
                f"refusing to overwrite {', '.join(clashes)}; choose another folder"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in names[:3]:
                shutil.copyfile(folder / name, out_dir / name)
            (out_dir / PUBLIC_KEY_FILE).write_text(public_pem(trusted))
            load_verified_folder(out_dir, trusted)
        except BaseException:
            for name in names:
                (out_dir / name).unlink(missing_ok=True)
            raise
        return out_dir

    # ---- publishing ----

    def publish(
        self,
        checkpoint: Checkpoint,
        *,
        config_digest: str,
        parent: int | None,
        key: Ed25519PrivateKey,
        contributors: Sequence[str] | None = None,
    ) -> VersionMetadata:
        """Sign and store ``checkpoint`` as the next version; return its metadata.

        Parameters
        ----------
        checkpoint
            The global model and its self-description.
        config_digest
            Digest of the run configuration that produced it (``config_digest``).
        parent
            The version this one continues from, or ``None`` for a first model.
        key
            The coordinator's signing key.
        contributors
            The members whose updates made the model (signed with it; ``None``: unknown).
        """
        if parent is not None:
            self.folder(parent)  # fails listing the versions when there is no such parent
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=PUBLISH_PREFIX, dir=self.root))
        try:
            save_checkpoint(checkpoint, staging / MODEL_FILE)
            # mkdtemp/mkstemp make 0700/0600; a published version is for members to read.
            staging.chmod(0o755)
            (staging / MODEL_FILE).chmod(0o644)
            weights_sha256 = _sha256(staging / MODEL_FILE)
            for _ in range(_PUBLISH_ATTEMPTS):
                numbers = self.version_numbers()
                meta = VersionMetadata(
                    version=(numbers[-1] if numbers else 0) + 1,
                    round=int(checkpoint.round),
                    run_id=checkpoint.run_id,
                    config_digest=config_digest,
                    metrics={k: float(v) for k, v in checkpoint.metrics.items()},
                    classes=tuple(checkpoint.classes),
                    preprocessing=checkpoint.preprocessing.to_dict(),
                    architecture=checkpoint.architecture,
                    arch_args=dict(checkpoint.arch_args),
                    created=datetime.now(UTC).isoformat(timespec="seconds"),
                    parent=parent,
                    weights_sha256=weights_sha256,
                    signer=fingerprint(key.public_key()),
                    contributors=None if contributors is None else tuple(contributors),
                )
                payload = meta.to_json_bytes()
                meta = _parse_metadata(payload, staging / METADATA_FILE)  # exactly what is read
                _write_synced(staging / METADATA_FILE, payload)
                _write_synced(staging / SIGNATURE_FILE, key.sign(payload))
                fsync_dir(staging)
                if _rename_if_free(staging, self.root / meta.name):
                    fsync_dir(self.root)
                    return meta
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        raise RegistryError(
            f"could not allocate a version number in {self.root} after {_PUBLISH_ATTEMPTS} tries"
        )


def load_verified_folder(
    folder: Path, trusted: Ed25519PublicKey
) -> tuple[Checkpoint, VersionMetadata]:
    """Verify a version folder (in a registry or exported) and load its checkpoint.

    Order: the signature over metadata.json's bytes, then model.pt's hash against the
    signed one, and only then :func:`load_checkpoint`, whose self-description must agree
    with the signed metadata.
    """
    metadata_path, signature_path = folder / METADATA_FILE, folder / SIGNATURE_FILE
    if not metadata_path.is_file():
        raise ModelVerificationError(f"{folder}: no {METADATA_FILE}; not a model version")
    if not signature_path.is_file():
        raise ModelVerificationError(
            f"{folder}: unsigned (no {SIGNATURE_FILE} file); refusing to load it"
        )
    payload = metadata_path.read_bytes()
    try:
        trusted.verify(signature_path.read_bytes(), payload)
    except InvalidSignature:
        raise ModelVerificationError(
            f"{folder}: metadata or signature changed, or signed by another key "
            f"({_signer_hint(payload, trusted)}); refusing to load it"
        ) from None
    meta = _parse_metadata(payload, metadata_path)
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise ModelVerificationError(f"{folder}: {MODEL_FILE} is missing")
    # Hash and load the same bytes: the file cannot be swapped between check and load.
    weights = model_path.read_bytes()
    if hashlib.sha256(weights).hexdigest() != meta.weights_sha256:
        raise ModelVerificationError(
            f"{folder}: weights changed after signing ({MODEL_FILE} does not match the "
            "signed SHA-256); refusing to load it"
        )
    try:
        checkpoint = load_checkpoint_bytes(weights, str(model_path))
    except CheckpointError as exc:
        raise ModelVerificationError(f"{folder}: {exc}") from None
    _check_consistent(folder, checkpoint, meta)
    return checkpoint, meta


def _check_consistent(folder: Path, checkpoint: Checkpoint, meta: VersionMetadata) -> None:
    declared = {
        "architecture": checkpoint.architecture,
        "arch_args": checkpoint.arch_args,
        "classes": list(checkpoint.classes),
        "round": checkpoint.round,
        "run_id": checkpoint.run_id,
        "preprocessing": checkpoint.preprocessing.to_dict(),
    }
    declared = json.loads(json.dumps(declared))  # compare as JSON, as the metadata was written
    signed = {name: value for name, value in meta.to_dict().items() if name in declared}
    differing = [name for name in declared if declared[name] != signed[name]]
    if differing:
        details = "; ".join(f"{n}: {signed[n]!r} vs {declared[n]!r}" for n in differing)
        raise ModelVerificationError(
            f"{folder}: the signed metadata and {MODEL_FILE} disagree (signed vs model.pt) "
            f"on {details}; refusing to load it"
        )


def _signer_hint(payload: bytes, trusted: Ed25519PublicKey) -> str:
    """Which of the two it is likely to be, from the signer the metadata claims."""
    expected = fingerprint(trusted)
    try:
        claimed = json.loads(payload)["signer"]
    except (ValueError, KeyError, TypeError):
        return f"trusted key {expected}"
    if claimed == expected:
        return f"it names the trusted key {expected} as signer: the files were altered"
    return f"it names signer {claimed}, the trusted key is {expected}"


def _parse_metadata(payload: bytes, path: Path) -> VersionMetadata:
    try:
        values = json.loads(payload)
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        return VersionMetadata.from_dict(values)
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"{path} is unreadable: {exc}") from None


def _read_metadata(path: Path) -> VersionMetadata:
    if not path.is_file():
        raise RegistryError(f"{path} is missing; the version folder is incomplete")
    return _parse_metadata(path.read_bytes(), path)


def _parse_version(version: int | str) -> int:
    if isinstance(version, int):
        number = version
    else:
        match = re.fullmatch(r"v?(\d+)", version.strip())
        if not match:
            raise RegistryError(f"version {version!r} is not a number, vNNNNNN or 'latest'")
        number = int(match.group(1))
    if number < 1:
        raise RegistryError(f"version {version!r}: versions start at 1")
    return number


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        os.chmod(path, 0o644)  # readable by members whatever the umask, like model.pt
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _rename_if_free(source: Path, target: Path) -> bool:
    """Rename a folder onto ``target`` unless another version already holds it."""
    try:
        os.rename(source, target)
    except OSError:
        if target.is_dir() and any(target.iterdir()):
            return False  # another publisher took this number
        raise
    return True
