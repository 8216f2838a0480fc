"""Which registry versions are in use, so that retention never removes them.

``<root>/in-use.json`` lists pins, each a version and what uses it::

    endpoint:<name>      a SageMaker endpoint (``serve deploy``); dropped by ``serve delete``
    export:<folder>      a verified copy (``models export``); dropped by ``models unpin``
    package:<file>       a SageMaker artifact (``serve package``); dropped by ``models unpin``
    local:<host>:<pid>   a ``serve local`` endpoint; held only while that process lives

Writers change the file under a lock (``.in-use.json.lock``) and replace it atomically;
:func:`add_pin` checks, under the same lock, that the version is still there. A prune
decides under that lock too, so either it sees the pin, or the command that pins sees
that the version has gone, never a pin on a half-removed version.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from fractofl.core.files.atomic import atomic_write_bytes
from fractofl.core.files.lock import file_lock
from fractofl.core.trust.registry import RegistryError

IN_USE_FILE = "in-use.json"
LOCK_FILE = ".in-use.json.lock"
PINS_FORMAT = 1


class PinsFileError(RegistryError):
    """``in-use.json`` is unreadable: what is in use is unknown, so nothing is pruned."""


@dataclass(frozen=True)
class Pin:
    """One use of one version: ``use`` is ``<kind>:<what>`` (see the module docstring)."""

    version: str
    use: str
    since: str
    pid: int = 0  # > 0: held only while this process (on ``host``) lives
    host: str = ""

    @property
    def kind(self) -> str:
        """``endpoint``, ``export``, ``package`` or ``local``."""
        return self.use.partition(":")[0]

    def holds(self) -> bool:
        """Whether the pin still keeps its version: one held by a process that has gone
        (on this host) does not; one of another host is assumed to hold."""
        if self.pid <= 0 or self.host != socket.gethostname():
            return True
        return _process_alive(self.pid)


def registry_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """The lock under which pins are written and a prune decides (not re-entrant)."""
    return file_lock(Path(root) / LOCK_FILE)


def read_pins(root: Path) -> list[Pin]:
    """Every pin recorded in ``root`` (none when there is no file).

    Raises
    ------
    PinsFileError
        If the file is unreadable: nothing is guessed, so nothing in use is removed.
    """
    path = Path(root) / IN_USE_FILE
    if not path.is_file():
        return []
    try:
        values = json.loads(path.read_bytes())
        if values.get("format") != PINS_FORMAT:
            raise ValueError(f"format {values.get('format')!r}, expected {PINS_FORMAT}")
        return [Pin(**pin) for pin in values["pins"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PinsFileError(
            f"{path} is unreadable ({exc}); it records which versions are in use, so "
            "nothing is pruned until it is fixed (or deleted, if no version is in use)"
        ) from None


def add_pin(root: Path, version: str, use: str, *, held_by_process: bool = False) -> Pin:
    """Record that ``use`` uses ``version`` (a folder name such as ``v000003``).

    ``held_by_process``: the pin lasts only while the calling process lives. Pins of
    processes that have gone, and of versions that have gone, are dropped on the way.

    Raises
    ------
    RegistryError
        If the version is not (or no longer) in the registry.
    """
    root = Path(root)
    pin = Pin(
        version=version,
        use=use,
        since=datetime.now(UTC).isoformat(timespec="seconds"),
        pid=os.getpid() if held_by_process else 0,
        host=socket.gethostname() if held_by_process else "",
    )
    with registry_lock(root):
        if not (root / version).is_dir():
            raise RegistryError(f"no version {version} in registry {root} (removed meanwhile?)")
        kept = [
            p
            for p in read_pins(root)
            if p.holds() and (root / p.version).is_dir() and (p.version, p.use) != (version, use)
        ]
        _write_pins(root, [*kept, pin])
    return pin


def remove_pins(root: Path, select: Callable[[Pin], bool]) -> list[Pin]:
    """Drop the pins for which ``select`` is true; return them."""
    root = Path(root)
    if not (root / IN_USE_FILE).is_file():
        return []
    with registry_lock(root):
        pins = read_pins(root)
        removed = [p for p in pins if select(p)]
        if removed:
            _write_pins(root, [p for p in pins if not select(p)])
    return removed


@contextlib.contextmanager
def pinned(root: Path, version: str, use: str, *, held_by_process: bool = False) -> Iterator[Pin]:
    """Pin ``version`` for the block. The pin stays afterwards, except when the block
    fails and the pin is new, or when it is ``held_by_process`` (then it always goes)."""
    existed = any((p.version, p.use) == (version, use) for p in read_pins(root))
    pin = add_pin(root, version, use, held_by_process=held_by_process)

    def this_pin(other: Pin) -> bool:
        return (other.version, other.use, other.pid) == (version, use, pin.pid)

    try:
        yield pin
    except BaseException:
        if not existed or held_by_process:
            remove_pins(root, this_pin)
        raise
    if held_by_process:
        remove_pins(root, this_pin)


def _write_pins(root: Path, pins: list[Pin]) -> None:
    data = {"format": PINS_FORMAT, "pins": [asdict(p) for p in pins]}
    atomic_write_bytes(root / IN_USE_FILE, (json.dumps(data, indent=2) + "\n").encode())


def _process_alive(pid: int) -> bool:
    if os.name != "posix":  # signal 0 is CTRL_C_EVENT on Windows: assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True
