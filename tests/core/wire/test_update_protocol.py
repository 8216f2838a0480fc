"""What a member's error reply means to the coordinator: a refusal or a failure."""

from __future__ import annotations

from fractofl.core.wire.update_protocol import is_member_refusal


def test_a_members_refusal_is_told_from_a_failure() -> None:
    assert is_member_refusal("member policy require_dp: this run does not use DP")
    assert is_member_refusal("CodeNotApprovedError: member code gate: run 5 brings code ...")
    assert not is_member_refusal("RuntimeError: CUDA out of memory")
    assert not is_member_refusal("member's warm process unavailable: ...")
