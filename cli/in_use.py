"""Recording which registry versions the commands use (``models export``, ``serve
package | local | deploy | delete``), so that retention keeps them.

The record is :mod:`fractofl.core.trust.pins`. A registry this user cannot write (a
member's read-only copy, say) must not stop an export or a deploy: the command warns
that the version is not recorded and goes on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path


def endpoint_use(endpoint: str) -> str:
    """The pin of a SageMaker endpoint."""
    return f"endpoint:{endpoint}"


def local_use() -> str:
    """The pin of this process's ``serve local`` endpoint."""
    return f"local:{socket.gethostname()}:{os.getpid()}"


def path_use(kind: str, path: Path) -> str:
    """The pin of an exported folder or a packaged artifact (``kind``: export, package)."""
    return f"{kind}:{Path(path).resolve()}"


@contextlib.contextmanager
def recording_use(
    root: Path, version: str, use: str, *, held_by_process: bool = False
) -> Iterator[None]:
    """Pin ``version`` for ``use`` around the block (see
    :func:`~fractofl.core.trust.pins.pinned`); warn when it cannot be recorded."""
    from fractofl.core.trust.pins import PinsFileError, pinned

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(pinned(root, version, use, held_by_process=held_by_process))
        except (OSError, PinsFileError) as exc:
            _warn(version, exc)
        yield


def record_use(root: Path, version: str, use: str) -> None:
    """Pin ``version`` for ``use`` until :func:`forget_use`; warn when it cannot be."""
    from fractofl.core.trust.pins import PinsFileError, add_pin

    try:
        add_pin(root, version, use)
    except (OSError, PinsFileError) as exc:
        _warn(version, exc)


def forget_use(root: Path, use: str, *, except_version: str = "") -> None:
    """Drop the pins of ``use`` (but the one on ``except_version``); warn on failure."""
    from fractofl.core.trust.pins import PinsFileError, remove_pins

    try:
        remove_pins(root, lambda pin: pin.use == use and pin.version != except_version)
    except (OSError, PinsFileError) as exc:
        print(
            f"fractofl: warning: could not drop the in-use record of {use} in {root} ({exc}); "
            "`fractofl models unpin` can later",
            file=sys.stderr,
        )


def _warn(version: str, exc: Exception) -> None:
    print(
        f"fractofl: warning: {version} is not recorded as in use ({exc}); registry "
        "retention may remove it",
        file=sys.stderr,
    )
