"""An append-only audit log whose lines are hash-chained, so a changed, inserted or removed
line shows.

One JSON object per line::

    {"seq": 3, "time": "2026-12-03T11:02:07Z", "event": {...}, "prev": "<hex>", "hash": "<hex>"}

``hash`` is the SHA-256 of ``prev`` and the canonical JSON of ``seq``, ``time`` and
``event``; ``prev`` is the previous line's ``hash`` (64 zeros for the first). Verifying
recomputes every hash and names the first line where the chain breaks. Removing the last
lines cannot be seen from the file alone: :func:`verify_log` returns the head hash, which
a security team can note down (or compare with the other party's log) to anchor it.

Several processes may append (Flower starts one ClientApp process per message): each
append holds an exclusive lock on ``<log>.lock`` while it reads the head and writes its
line, and fsyncs before the lock is released.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fractofl.core.files.lock import file_lock

GENESIS = "0" * 64
TAIL_BYTES = 65536  # enough to hold the last line of any log this module writes


class AuditLogError(ValueError):
    """An audit log that cannot be read or whose chain is broken; names the line."""


@dataclass(frozen=True)
class AuditEntry:
    """One verified line of an audit log."""

    line: int
    seq: int
    time: str
    event: dict[str, Any]
    hash: str


def _entry_hash(prev: str, seq: int, time: str, event: Mapping[str, Any]) -> str:
    body = json.dumps({"seq": seq, "time": time, "event": event}, sort_keys=True)
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _last_line(path: Path) -> bytes | None:
    """The log's last complete line, or None for an empty log; AuditLogError when the
    log ends mid-line (a write was cut short: appending would hide it)."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return None
    with path.open("rb") as handle:
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
    if not tail.endswith(b"\n"):
        raise AuditLogError(
            f"{path} ends mid-line (a write was cut short, or the file was edited); "
            f"`fractofl ... audit --log {path}` shows where; move it aside to start a new log"
        )
    return tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]


def append_event(path: Path, event: Mapping[str, Any]) -> AuditEntry:
    """Append ``event`` (JSON-serialisable) as the next line of the log at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        last = _last_line(path)
        if last is None:
            seq, prev = 1, GENESIS
        else:
            try:
                head = json.loads(last)
                seq, prev = int(head["seq"]) + 1, str(head["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditLogError(
                    f"{path}: its last line is not an audit entry ({exc})"
                ) from None
        time = _now()
        event = dict(event)
        digest = _entry_hash(prev, seq, time, event)
        line = json.dumps(
            {"seq": seq, "time": time, "event": event, "prev": prev, "hash": digest},
            sort_keys=True,
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, (line + "\n").encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return AuditEntry(seq, seq, time, event, digest)


def read_log(path: Path) -> Iterator[AuditEntry]:
    """Every line of the log, verified as it is read; AuditLogError at the first line that
    is cut short, not an entry, out of sequence, or whose hash or link does not match."""
    if not path.is_file():
        raise AuditLogError(f"no audit log at {path}")
    prev, expected_seq = GENESIS, 1
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                raise AuditLogError(f"{path}, line {number}: cut short (the log ends mid-line)")
            try:
                values = json.loads(raw)
                seq, time = int(values["seq"]), str(values["time"])
                event, link, digest = values["event"], str(values["prev"]), str(values["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditLogError(f"{path}, line {number}: not an audit entry ({exc})") from None
            if seq != expected_seq:
                raise AuditLogError(
                    f"{path}, line {number}: entry {seq} where {expected_seq} was expected "
                    "(a line was removed or inserted before it)"
                )
            if link != prev:
                raise AuditLogError(
                    f"{path}, line {number}: does not follow line {number - 1} (its 'prev' is "
                    "not that line's hash: a line before it was changed or removed)"
                )
            if _entry_hash(prev, seq, time, event) != digest:
                raise AuditLogError(
                    f"{path}, line {number}: its content does not match its hash (the line "
                    "was edited)"
                )
            yield AuditEntry(number, seq, time, event, digest)
            prev, expected_seq = digest, seq + 1


def verify_log(path: Path) -> tuple[int, str]:
    """Check the whole chain: (number of entries, head hash); AuditLogError naming the
    first bad line."""
    count, head = 0, GENESIS
    for entry in read_log(path):
        count, head = entry.seq, entry.hash
    return count, head
