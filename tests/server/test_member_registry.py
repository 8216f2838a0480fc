"""The coordinator's member register (members.json): what it refuses before asking
Flower, and that it is written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fractofl.core.config.run_config import DeploymentConfig
from fractofl.core.trust.pki import create_member_key_pair
from fractofl.server.member_registry import (
    Member,
    MemberRegistry,
    MemberRegistryError,
    add_member,
)
from fractofl.server.superlink import CoordinatorFiles

KEY_A, KEY_B = "SHA256:aaaa", "SHA256:bbbb"


def member(name: str, fingerprint: str, node_id: int = 1, revoked: str = "") -> Member:
    return Member(name, node_id, fingerprint, "ecdsa-sha2-nistp384 AAAA", "2026-01-02", revoked)


@pytest.fixture
def registry(tmp_path: Path) -> MemberRegistry:
    """org-a active with key A; org-b revoked, its key B."""
    registry = MemberRegistry(tmp_path / "state")
    with registry.locked():
        registry.save([member("org-a", KEY_A, 1), member("org-b", KEY_B, 2, "2026-02-03T10:00")])
    return registry


def test_the_register_keeps_every_field_and_leaves_no_temporary_file(
    registry: MemberRegistry,
) -> None:
    # Execute
    members = registry.members()
    # Assert
    assert [m.name for m in members] == ["org-a", "org-b"]
    assert members[1].revoked.startswith("2026-02-03") and not members[1].active
    assert json.loads(registry.path.read_text())["members"][0]["fingerprint"] == KEY_A
    assert sorted(p.name for p in registry.path.parent.iterdir()) == [
        ".members.json.lock",
        "members.json",
    ]


def test_a_revoked_key_needs_a_new_key_pair(registry: MemberRegistry) -> None:
    # Execute / Assert: Flower refuses a used key; the register says why first
    with pytest.raises(MemberRegistryError, match="needs a new key pair") as raised:
        registry.check_new("org-b", KEY_B)
    assert "revoked on 2026-02-03" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "fingerprint", "message"),
    [
        ("org-c", KEY_A, "already registered for org-a"),
        ("org-a", "SHA256:cccc", "a member called 'org-a' is already registered"),
    ],
)
def test_a_name_or_key_in_use_is_refused(
    registry: MemberRegistry, name: str, fingerprint: str, message: str
) -> None:
    with pytest.raises(MemberRegistryError, match=message):
        registry.check_new(name, fingerprint)


def test_a_revoked_member_returns_under_its_name_with_a_new_key(registry: MemberRegistry) -> None:
    # Execute / Assert: nothing raised
    registry.check_new("org-b", "SHA256:new")


def test_revoking_an_unknown_name_lists_the_active_ones(registry: MemberRegistry) -> None:
    with pytest.raises(MemberRegistryError, match=r"active members: org-a$"):
        registry.find_active("org-b")


def test_a_damaged_register_is_named(registry: MemberRegistry) -> None:
    # Prepare
    registry.path.write_text('{"members": [{"name": "x"}]}')
    # Execute / Assert
    with pytest.raises(MemberRegistryError, match=r"members\.json is damaged"):
        registry.members()


def test_add_refuses_a_revoked_key_without_a_superlink(
    registry: MemberRegistry, tmp_path: Path
) -> None:
    # Prepare: a real key pair whose fingerprint the register holds as revoked
    keys = create_member_key_pair(tmp_path / "member")
    with registry.locked():
        registry.save([member("org-b", keys.fingerprint, 2, "2026-02-03T10:00")])
    cfg = DeploymentConfig(state_dir=str(registry.path.parent), connect_timeout_s=1)
    # Execute / Assert: refused before Flower is asked (no SuperLink runs here)
    with pytest.raises(MemberRegistryError, match="needs a new key pair"):
        add_member(CoordinatorFiles.from_config(cfg), cfg, keys.public_key, "org-b")
