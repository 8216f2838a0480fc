"""The member's audit log: every instruction its node received and every reply it sent.

A Flower mod around the whole ClientApp (outside secure aggregation's own mod, so it sees
exactly what leaves; only :mod:`~fractofl.client.packed_messages` is outside it, which
changes how the arrays travel, not what: packed, they are these arrays' bytes, one after
the other, behind a header of their names, dtypes and shapes). A real member's SuperNode
names the log in its node config (``audit-log``, set by ``fractofl member join`` to
``deployment.member_dir/audit.log``);
a simulated member has none and is not logged. Each entry records the run, the round, the
kind of message, a digest of the instruction's configuration, and for what left: every
array's record, name, shape, dtype, byte count and SHA-256, the metrics' names and values,
and a SHA-256 over all the bytes of the reply's arrays. ``fractofl member audit`` prints
the log and verifies its hash chain (:mod:`fractofl.core.trust.audit_log`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fractofl.client.node_config import AUDIT_LOG_KEY
from fractofl.core.trust.audit_log import append_event
from fractofl.core.wire.update_protocol import SERVER_ROUND_KEY

RECEIVED, SENT = "received", "sent"


def _round_of(content: RecordDict) -> int | None:
    for config in content.config_records.values():
        value = config.get(SERVER_ROUND_KEY)
        if isinstance(value, int):
            return value
    return None


def config_digest_of(content: RecordDict) -> str:
    """SHA-256 of an instruction's configuration records (canonical JSON, bytes as hex)."""
    document = {
        name: {key: (v.hex() if isinstance(v, bytes) else v) for key, v in sorted(record.items())}
        for name, record in sorted(content.config_records.items())
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def arrays_of(content: RecordDict) -> tuple[list[dict[str, Any]], str, int]:
    """Every array of ``content`` (record, name, shape, dtype, bytes, SHA-256), the SHA-256
    over all their bytes in order, and their total size."""
    whole = hashlib.sha256()
    listed: list[dict[str, Any]] = []
    total = 0
    for record_name, record in content.array_records.items():
        for name, array in record.items():
            whole.update(array.data)
            total += len(array.data)
            listed.append(
                {
                    "record": record_name,
                    "name": name,
                    "shape": list(array.shape),
                    "dtype": array.dtype,
                    "bytes": len(array.data),
                    "sha256": hashlib.sha256(array.data).hexdigest(),
                }
            )
    return listed, whole.hexdigest(), total


def received_event(msg: Message) -> dict[str, Any]:
    """What the log records of an instruction."""
    event: dict[str, Any] = {
        "kind": RECEIVED,
        "run_id": msg.metadata.run_id,
        "message_id": msg.metadata.message_id,
        "message_type": msg.metadata.message_type,
    }
    if msg.has_content():
        _, digest, total = arrays_of(msg.content)
        event |= {
            "round": _round_of(msg.content),
            "config_sha256": config_digest_of(msg.content),
            "arrays_bytes": total,
            "arrays_sha256": digest,
        }
    return event


def sent_event(instruction: Message, reply: Message) -> dict[str, Any]:
    """What the log records of a reply: everything that left, described and hashed."""
    event: dict[str, Any] = {
        "kind": SENT,
        "run_id": instruction.metadata.run_id,
        "reply_to": instruction.metadata.message_id,
        "message_type": instruction.metadata.message_type,
        "round": _round_of(instruction.content) if instruction.has_content() else None,
    }
    if reply.has_error():
        return event | {"error": str(reply.error.reason)}
    listed, digest, total = arrays_of(reply.content)
    metrics = {name: dict(record.items()) for name, record in reply.content.metric_records.items()}
    configs = {name: sorted(record.keys()) for name, record in reply.content.config_records.items()}
    return event | {
        "arrays": listed,
        "arrays_bytes": total,
        "arrays_sha256": digest,
        "metrics": metrics,
        "config_keys": configs,
        "config_sha256": config_digest_of(reply.content),
    }


def audit_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Log the instruction, handle it, log the reply (when the node names an audit log)."""
    where = context.node_config.get(AUDIT_LOG_KEY)
    if not where:
        return call_next(msg, context)
    path = Path(str(where))
    append_event(path, received_event(msg))
    reply = call_next(msg, context)
    append_event(path, sent_event(msg, reply))
    return reply
