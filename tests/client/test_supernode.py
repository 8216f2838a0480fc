"""What a member is told when its SuperNode stops by itself."""

from __future__ import annotations

import pytest

from fractofl.client.supernode import why_it_stopped

ADDRESS, CONSORTIUM = "coordinator.example.org:9092", "Fracture consortium CA"
WHOM = f"the operator of {CONSORTIUM} (the coordinator at {ADDRESS})"


def test_a_graceful_stop_it_did_not_ask_for_means_its_key_was_revoked() -> None:
    # Execute: Flower's SuperNode exits 0 after the SuperLink answered 401 to its key
    reason = why_it_stopped(0, False, ADDRESS, CONSORTIUM)
    # Assert
    assert reason is not None
    assert "unregistered this node (`fractofl member revoke`)" in reason
    assert WHOM in reason and "fractofl member keys --force" in reason


def test_an_error_exit_points_at_an_unregistered_key() -> None:
    # Execute
    reason = why_it_stopped(1, False, ADDRESS, CONSORTIUM)
    # Assert
    assert reason is not None and "exit code 1" in reason
    assert "`Failed to activate SuperNode`" in reason and WHOM in reason


@pytest.mark.parametrize("code", [0, 1])
def test_a_stop_the_member_asked_for_needs_no_words(code: int) -> None:
    # Execute / Assert
    assert why_it_stopped(code, True, ADDRESS, CONSORTIUM) is None
