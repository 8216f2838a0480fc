"""What the parts that run a real federation (federation, front) share: the test suite's
own process helpers, loaded by path, and the consortium PKI and members' key pairs.

``tests`` is not an importable package here (an installed distribution ships a top-level
``tests`` of its own), so the helpers are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from plan import BENCH_DIR

from fractofl.core.trust.pki import (
    MEMBER_PUBLIC_KEY_FILE,
    create_ca,
    create_member_key_pair,
    issue_server_certificate,
)

REPO = BENCH_DIR.parent


def _load(relative: str) -> ModuleType:
    """A helper module of the tests, by path."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


processes = _load("tests/federation/processes.py")
RecordingProxy = _load("tests/federation/recording_proxy.py").RecordingProxy
Processes, fractofl = processes.Processes, processes.fractofl
free_port, free_ports = processes.free_port, processes.free_ports


def prepare_pki(work: Path, members: int) -> None:
    """The consortium CA and the SuperLink's certificate in ``work/pki``, and a key pair
    for each member in ``work/member<i>``."""
    create_ca(work / "pki", "bench consortium CA", days=2)
    issue_server_certificate(work / "pki", ["localhost", "127.0.0.1"], days=2)
    for member in range(members):
        create_member_key_pair(work / f"member{member}")


def run_folder_overrides(work: Path, name: str) -> list[str]:
    """Overrides that keep run ``name``'s data (``work/data``), run folder, registry and
    signing key inside ``work``."""
    return [
        f"data.root={work / 'data'}",
        f"output.root={work / 'runs'}",
        f"output.name={name}",
        f"registry.root={work / 'registry'}",
        f"registry.private_key={work / 'keys' / 'coordinator.key'}",
        f"registry.public_key={work / 'keys' / 'coordinator.pub'}",
    ]


def member_public_key(work: Path, member: int) -> Path:
    """Member ``member``'s public key, as :func:`prepare_pki` wrote it."""
    return work / f"member{member}" / MEMBER_PUBLIC_KEY_FILE
