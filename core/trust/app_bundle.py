"""The code a Flower app bundle (FAB) makes a member run, summed up as one digest.

In Flower 1.42 whoever starts a run ships a FAB, a zip of the app's files, and every
SuperNode runs its ClientApp beside the member's images. fractofl's own bundle carries no
code: its ``pyproject.toml`` names the installed ``fractofl.client.app:app`` and carries
the run's settings in ``[tool.flwr.app.config]``. A bundle that ships code of its own (or
names another component) makes members run that code instead.

The **code digest** covers what decides the code and nothing else: the SHA-256 of the
``sha256sum``-style listing (``<sha256>  <path>`` per line, sorted by path) of every file
in the bundle, where ``pyproject.toml`` counts as its canonical JSON without the run's
settings (which change every run and which the member's policy judges on its own), and
Flower's ``.info/`` manifest is left out (it repeats the files' hashes). One changed
line, one extra file or another component name gives another digest.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tomli_w

APP_CONFIG_FILE = "pyproject.toml"
FLOWER_INFO_DIR = ".info/"
SERVER_APP = "fractofl.server.app:app"
CLIENT_APP = "fractofl.client.app:app"
PUBLISHER = "fractofl"
DIGEST_LENGTH = 64
MAX_BUNDLE_FILES = 10_000  # a FAB holds an app's sources; more is not a bundle we read
MAX_BUNDLE_BYTES = 200 * 2**20  # unpacked; Flower caps the zip itself at 10 MB (FAB_MAX_SIZE)


class BundleError(ValueError):
    """A bundle or a digest that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class BundleCode:
    """What a bundle would make a member run."""

    digest: str
    clientapp: str
    """The ClientApp component it names (``module:attribute``)."""
    code_files: tuple[str, ...]
    """Its files besides ``pyproject.toml``: code it ships of its own."""

    def describe(self) -> str:
        """One line for a person: the component, and the files it ships."""
        shipped = (
            f"ships {len(self.code_files)} file(s) of its own: {', '.join(self.code_files[:5])}"
            + (" ..." if len(self.code_files) > 5 else "")
            if self.code_files
            else "ships no code of its own"
        )
        return f"its ClientApp is {self.clientapp or '(none named)'} and it {shipped}"


def app_pyproject(config: Mapping[str, Any]) -> str:
    """fractofl's own app ``pyproject.toml``: the installed apps, the run's ``config``."""
    document = {
        "project": {"name": "fractofl-run", "version": "1.0.0"},
        "tool": {
            "flwr": {
                "app": {
                    "publisher": PUBLISHER,
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": dict(config),
                }
            }
        },
    }
    return tomli_w.dumps(document)


def _settings_free(pyproject: bytes) -> tuple[bytes, str]:
    """``pyproject.toml`` as canonical JSON without the run's settings, and its ClientApp."""
    try:
        document = tomllib.loads(pyproject.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BundleError(f"the bundle's {APP_CONFIG_FILE} is not valid TOML: {exc}") from None
    app = document.get("tool", {}).get("flwr", {}).get("app", {})
    if isinstance(app, dict):
        app.pop("config", None)
        components = app.get("components", {})
        clientapp = str(components.get("clientapp", "")) if isinstance(components, dict) else ""
    else:
        clientapp = ""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return canonical.encode(), clientapp


def bundle_code(files: Mapping[str, bytes]) -> BundleCode:
    """The code digest of a bundle given as its files (relative POSIX path -> bytes)."""
    if APP_CONFIG_FILE not in files:
        raise BundleError(f"the bundle has no {APP_CONFIG_FILE}")
    lines = []
    clientapp = ""
    for path in sorted(files):
        if path.startswith(FLOWER_INFO_DIR):
            continue
        content = files[path]
        if path == APP_CONFIG_FILE:
            content, clientapp = _settings_free(content)
        lines.append(f"{hashlib.sha256(content).hexdigest()}  {path}\n")
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    code_files = tuple(
        p for p in sorted(files) if p != APP_CONFIG_FILE and not p.startswith(FLOWER_INFO_DIR)
    )
    return BundleCode(digest, clientapp, code_files)


def fab_files(fab: bytes) -> dict[str, bytes]:
    """The files of a FAB (a zip), bounded in count and size."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            entries = [info for info in archive.infolist() if not info.is_dir()]
            if len(entries) > MAX_BUNDLE_FILES:
                raise BundleError(f"the bundle holds {len(entries)} files (> {MAX_BUNDLE_FILES})")
            if sum(info.file_size for info in entries) > MAX_BUNDLE_BYTES:
                raise BundleError(f"the bundle unpacks to more than {MAX_BUNDLE_BYTES} bytes")
            return {info.filename: archive.read(info) for info in entries}
    except zipfile.BadZipFile as exc:
        raise BundleError(f"the bundle is not a zip file: {exc}") from None


def fab_code(fab: bytes) -> BundleCode:
    """The code digest of a FAB's bytes."""
    return bundle_code(fab_files(fab))


@functools.cache
def fractofl_bundle() -> BundleCode:
    """fractofl's own bundle, which runs the fractofl its member installed (any run's
    settings: they are not part of the digest)."""
    return bundle_code({APP_CONFIG_FILE: app_pyproject({}).encode()})


def parse_digest(text: str) -> str:
    """A code digest as typed by a person (64 hex digits, either case), lower-cased;
    BundleError saying what is wrong with it."""
    digest = text.strip().lower()
    if len(digest) != DIGEST_LENGTH:
        raise BundleError(
            f"{text!r} is {len(digest)} characters long; a code digest is {DIGEST_LENGTH} hex "
            "digits (copy it whole from what `fractofl coordinator run` printed)"
        )
    bad = sorted({c for c in digest if c not in "0123456789abcdef"})
    if bad:
        raise BundleError(
            f"{text!r} holds {''.join(bad)!r}, which is not a hex digit; a code digest is "
            f"{DIGEST_LENGTH} characters of 0-9 and a-f"
        )
    return digest
