"""A real federation on loopback: the ``fractofl`` commands a coordinator and members
type, as separate processes (SuperLink, SuperNodes, ClientApps), on free ports.

Every process started here is stopped at the end, also when a test fails: each one is
started in a session of its own and its whole process group is killed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fractofl.core.synth.dataset import generate_dataset, holdout_dir, member_dir
from fractofl.core.trust.pki import (
    CA_CERT_FILE,
    MEMBER_KEY_FILE,
    MEMBER_PUBLIC_KEY_FILE,
    create_ca,
    create_member_key_pair,
    issue_server_certificate,
)
from tests.conftest import easy_spec

pytestmark = pytest.mark.slow

MEMBERS = 3
START_TIMEOUT_S = 60.0
SMALL_RUN = [
    "model.image_size=32",
    "model.args.width=8",
    "train.local_epochs=1",
    "federation.min_train_members=2",
    "federation.min_evaluate_members=2",
]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


@dataclass(frozen=True)
class Consortium:
    """The CA, the SuperLink's certificate and the members' key pairs, on disk."""

    root: Path
    pki: Path
    members: list[Path]
    outsider: Path

    @property
    def ca_cert(self) -> Path:
        return self.pki / CA_CERT_FILE

    @staticmethod
    def private_key(member: Path) -> Path:
        return member / MEMBER_KEY_FILE

    @staticmethod
    def public_key(member: Path) -> Path:
        return member / MEMBER_PUBLIC_KEY_FILE


@pytest.fixture(scope="session")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    """A consortium CA, a SuperLink certificate for localhost, 3 members' keys and the
    keys of one organisation that was never registered."""
    root = tmp_path_factory.mktemp("consortium")
    pki = root / "pki"
    create_ca(pki, "test consortium CA", days=30)
    issue_server_certificate(pki, ["localhost", "127.0.0.1"], days=30)
    members = [root / f"member{i}" for i in range(MEMBERS)]
    for folder in [*members, root / "outsider"]:
        create_member_key_pair(folder)
    return Consortium(root, pki, members, root / "outsider")


@pytest.fixture(scope="session")
def member_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The easy synthetic set split across 3 members, plus the coordinator's test set."""
    root = tmp_path_factory.mktemp("federation-data") / "data"
    generate_dataset(root, easy_spec(members=MEMBERS))
    return root


def member_images(data_root: Path, member: int) -> Path:
    return member_dir(data_root, member)


def coordinator_test_set(data_root: Path) -> Path:
    return holdout_dir(data_root)
