"""The member's privacy policy: validated with the key named, enforced on every
instruction (a refusal names the rule and nothing runs), metrics filtered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.supercore.task_identity import TaskIdentity

from fractofl.client.audit import audit_mod
from fractofl.client.node_config import AUDIT_LOG_KEY, POLICY_KEY
from fractofl.client.policy import (
    Instruction,
    MemberPolicy,
    PolicyError,
    load_policy,
    policy_mod,
    refusal,
)
from fractofl.core.trust.audit_log import read_log

RUN = {
    "strategy.name": "fedavg",
    "privacy.dp": False,
    "privacy.max_epsilon": 0.0,
    "federation.min_train_members": 2,
}


@pytest.fixture(autouse=True)
def _flower_task() -> None:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_a_policy_file_is_read_and_every_mistake_names_its_key(tmp_path: Path) -> None:
    policy = load_policy(
        _write(tmp_path, "require_secure_aggregation: true\nallowed_strategies: [fedavg]\n")
    )
    assert policy.require_secure_aggregation and policy.allowed_strategies == ("fedavg",)
    for text, expected in [
        ("require_secure_agregation: true\n", "unknown key(s) require_secure_agregation"),
        ("require_dp: yes-please\n", "require_dp='yes-please' must be true or false"),
        ("min_members: -1\n", "min_members=-1 must be a whole number >= 0"),
        ("max_epsilon: many\n", "max_epsilon='many' must be a number"),
        ("allowed_compression: int8\n", "allowed_compression='int8' must be a list of names"),
        ("- a list\n", "must be a mapping of rules"),
    ]:
        with pytest.raises(PolicyError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            load_policy(_write(tmp_path, text))


def _instruction(**changes: object) -> Instruction:
    values: dict[str, object] = {
        "message_type": "train",
        "run_id": 5,
        "config": {"server-round": 1, "compression-mode": "none"},
        "run_config": RUN,
        "secure": False,
    }
    values.update(changes)
    return Instruction(**values)  # type: ignore[arg-type]


def test_each_rule_refuses_what_breaks_it_and_names_itself() -> None:
    dp_config = {"server-round": 1, "compression-mode": "none", "clipping_norm": 1.0}
    cases = [
        (
            MemberPolicy(require_secure_aggregation=True),
            _instruction(),
            "require_secure_aggregation",
        ),
        (MemberPolicy(require_dp=True), _instruction(), "require_dp"),
        (
            MemberPolicy(max_epsilon=2.0),
            _instruction(config=dp_config, run_config={**RUN, "privacy.max_epsilon": 8.0}),
            "max_epsilon=2: this run's privacy.max_epsilon is 8",
        ),
        (MemberPolicy(min_members=3), _instruction(), "min_members=3"),
        (
            MemberPolicy(allowed_strategies=("fedprox",)),
            _instruction(),
            "allowed_strategies=['fedprox']: this run uses 'fedavg'",
        ),
        (
            MemberPolicy(allowed_compression=("int8",)),
            _instruction(),
            "allowed_compression=['int8']: this run asks for 'none'",
        ),
        (
            MemberPolicy(share_personal_model=False),
            _instruction(message_type="train.personalize"),
            "share_personal_model: false: this member's personalized model stays here",
        ),
        # a personalized model is sent as it is: the training rules hold for it too
        (
            MemberPolicy(require_secure_aggregation=True),
            _instruction(message_type="train.personalize"),
            "require_secure_aggregation",
        ),
    ]
    for policy, instruction, expected in cases:
        reason = refusal(policy, instruction, None)
        assert reason is not None and expected in reason
    # ... and lets through what keeps it
    assert (
        refusal(MemberPolicy(require_secure_aggregation=True), _instruction(secure=True), None)
        is None
    )
    assert refusal(MemberPolicy(require_dp=True), _instruction(config=dp_config), None) is None
    private = _instruction(config=dp_config, run_config={**RUN, "privacy.max_epsilon": 1.5})
    assert refusal(MemberPolicy(max_epsilon=2.0), private, None) is None
    assert refusal(MemberPolicy(min_members=2), _instruction(), None) is None
    assert refusal(MemberPolicy(share_personal_model=False), _instruction(), None) is None
    personalize = _instruction(message_type="train.personalize")
    assert refusal(MemberPolicy(), personalize, None) is None
    # evaluation only sends metrics back, which the metrics filter bounds
    assert (
        refusal(MemberPolicy(require_dp=True), _instruction(message_type="evaluate"), None) is None
    )


def _train_message(secure: bool = False) -> Message:
    records: dict[str, object] = {
        "arrays": ArrayRecord({"w": Array(np.zeros(3, np.float32))}),
        "config": ConfigRecord({"server-round": 1, "compression-mode": "none"}),
    }
    if secure:
        records[RECORD_KEY_CONFIGS] = ConfigRecord({"stage": "setup"})
    return Message(RecordDict(records), dst_node_id=3, message_type="train")  # type: ignore[arg-type]


def _context(node_config: dict[str, str]) -> Context:
    return Context(run_id=5, node_id=3, node_config=node_config, state=RecordDict(), run_config=RUN)


def test_a_refused_instruction_never_runs_and_the_reply_names_the_rule(tmp_path: Path) -> None:
    policy = _write(tmp_path, "require_secure_aggregation: true\n")
    log = tmp_path / "audit.log"
    ran: list[str] = []

    def train(msg: Message, _context: Context) -> Message:
        ran.append("trained")
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    context = _context({POLICY_KEY: str(policy), AUDIT_LOG_KEY: str(log)})
    # the ClientApp's order: the audit mod outside, the policy inside it
    reply = audit_mod(_train_message(), context, lambda m, c: policy_mod(m, c, train))
    assert reply.has_error() and not ran
    assert "member policy require_secure_aggregation" in reply.error.reason
    assert list(read_log(log))[-1].event["error"] == reply.error.reason
    # a SecAgg+ instruction of the same run is answered
    reply = audit_mod(_train_message(secure=True), context, lambda m, c: policy_mod(m, c, train))
    assert reply.has_content() and ran == ["trained"]


def test_rounds_are_counted_from_the_audit_log(tmp_path: Path) -> None:
    policy = _write(tmp_path, "max_rounds_per_run: 1\n")
    log = tmp_path / "audit.log"
    context = _context({POLICY_KEY: str(policy), AUDIT_LOG_KEY: str(log)})

    def train(msg: Message, _context: Context) -> Message:
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(np.ones(3, np.float32))}),
                "metrics": MetricRecord({"num-examples": 3}),
            }
        )
        return Message(content, reply_to=msg)

    first = audit_mod(_train_message(), context, lambda m, c: policy_mod(m, c, train))
    second = audit_mod(_train_message(), context, lambda m, c: policy_mod(m, c, train))
    assert first.has_content()
    assert (
        second.has_error() and "max_rounds_per_run=1: already 1 in this run" in second.error.reason
    )


def test_metrics_the_policy_does_not_allow_never_leave(tmp_path: Path) -> None:
    policy = _write(tmp_path, "send_metrics: [train-loss]\n")

    def train(msg: Message, _context: Context) -> Message:
        metrics = MetricRecord({"num-examples": 3, "train-loss": 0.5, "recall-fatigue": 0.9})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    reply = policy_mod(_train_message(), _context({POLICY_KEY: str(policy)}), train)
    assert dict(reply.content.metric_records["metrics"]) == {"num-examples": 3, "train-loss": 0.5}


def test_a_broken_policy_file_stops_the_instruction_with_its_key(tmp_path: Path) -> None:
    policy = _write(tmp_path, "min_member: 3\n")
    with pytest.raises(PolicyError, match="unknown key"):
        policy_mod(_train_message(), _context({POLICY_KEY: str(policy)}), lambda m, c: m)
