"""The member's audit mod: every instruction and every reply, with what left hashed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.error import Error
from flwr.supercore.task_identity import TaskIdentity

from fractofl.cli.main import main
from fractofl.client.audit import audit_mod
from fractofl.client.node_config import AUDIT_LOG_KEY
from fractofl.core.trust.audit_log import read_log


@pytest.fixture(autouse=True)
def _flower_task() -> None:
    """Flower stamps new messages with the task's identity, as a ServerApp's process has."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0


def _context(node_config: dict[str, str]) -> Context:
    return Context(run_id=7, node_id=3, node_config=node_config, state=RecordDict(), run_config={})


def _instruction() -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.zeros(4, np.float32))}),
            "config": ConfigRecord({"server-round": 2, "compression": "none"}),
        }
    )
    return Message(content, dst_node_id=3, message_type="train")


def _reply(instruction: Message) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord(
                {"w": Array(np.arange(4, dtype=np.float32)), "n": Array(np.array(3))}
            ),
            "metrics": MetricRecord({"num-examples": 12, "train-loss": 0.5}),
        }
    )
    return Message(content, reply_to=instruction)


def test_every_instruction_and_reply_is_logged_with_what_left(tmp_path: Path) -> None:
    log = tmp_path / "member" / "audit.log"
    instruction = _instruction()
    reply = audit_mod(instruction, _context({AUDIT_LOG_KEY: str(log)}), lambda m, _c: _reply(m))

    received, sent = (entry.event for entry in read_log(log))
    assert received["kind"] == "received" and received["round"] == 2
    assert received["message_type"] == "train" and len(received["config_sha256"]) == 64
    assert sent["kind"] == "sent" and sent["round"] == 2
    arrays = reply.content.array_records["arrays"]
    expected = hashlib.sha256(b"".join(a.data for a in arrays.values())).hexdigest()
    assert sent["arrays_sha256"] == expected
    assert sent["arrays_bytes"] == sum(len(a.data) for a in arrays.values())
    assert [(a["name"], a["shape"], a["dtype"]) for a in sent["arrays"]] == [
        ("w", [4], "float32"),
        ("n", [], "int64"),
    ]
    assert sent["arrays"][0]["sha256"] == hashlib.sha256(arrays["w"].data).hexdigest()
    assert sent["metrics"] == {"metrics": {"num-examples": 12, "train-loss": 0.5}}


def test_an_error_reply_is_logged_with_its_reason(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"

    def fail(msg: Message, _context: Context) -> Message:
        return Message(Error(code=1, reason="policy: no"), reply_to=msg)

    audit_mod(_instruction(), _context({AUDIT_LOG_KEY: str(log)}), fail)
    sent = list(read_log(log))[-1].event
    assert sent["error"] == "policy: no" and "arrays" not in sent


def test_a_member_without_an_audit_log_is_not_logged(tmp_path: Path) -> None:
    reply = audit_mod(_instruction(), _context({}), lambda m, _c: _reply(m))
    assert reply.has_content()
    assert not any(tmp_path.iterdir())


def test_member_audit_prints_and_verifies_and_names_an_edited_line(
    tmp_path: Path, capsys: object
) -> None:
    log = tmp_path / "audit.log"
    for _ in range(2):
        audit_mod(_instruction(), _context({AUDIT_LOG_KEY: str(log)}), lambda m, _c: _reply(m))
    assert main(["member", "audit", "--log", str(log)]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "4 entries, hash chain verified" in out
    assert "sent run_id=7 round=2" in out

    lines = log.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"train-loss": 0.5', '"train-loss": 0.1')
    log.write_text("".join(lines))
    assert main(["member", "audit", "--log", str(log)]) == 1
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    assert "line 4: its content does not match its hash" in captured.err
    assert "(entries 1-3 above verified)" in captured.err
