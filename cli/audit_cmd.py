"""``fractofl member audit`` and ``fractofl coordinator audit``: print an audit log and
verify its hash chain (:mod:`fractofl.core.trust.audit_log`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fractofl.core.trust.audit_log import AuditLogError, read_log

EXIT_OK, EXIT_BROKEN = 0, 1


def _describe(event: dict[str, Any]) -> str:
    """One line for an event: its kind, run and round first, then what it carries."""
    head = [str(event.get("kind", "?"))]
    for key in ("run_id", "round", "message_type"):
        if event.get(key) is not None:
            head.append(f"{key}={event[key]}")
    if "arrays_bytes" in event:
        head.append(f"{event['arrays_bytes']} bytes sha256={str(event['arrays_sha256'])[:16]}")
    rest = {
        k: v
        for k, v in event.items()
        if k not in {"kind", "run_id", "round", "message_type", "arrays_bytes", "arrays_sha256"}
    }
    return " ".join(head) + (f" {json.dumps(rest, sort_keys=True)}" if rest else "")


def print_audit(path: Path, full: bool) -> int:
    """Print every entry of the log at ``path`` (``full``: each event as JSON) and verify
    the chain; exit 1 with the first bad line when it is broken."""
    count, head = 0, ""
    try:
        for entry in read_log(path):
            text = json.dumps(entry.event, sort_keys=True) if full else _describe(entry.event)
            print(f"{entry.seq:6d} {entry.time} {text}")
            count, head = entry.seq, entry.hash
    except AuditLogError as exc:
        print(f"fractofl: the audit log is broken: {exc}", file=sys.stderr)
        if count:
            print(f"(entries 1-{count} above verified)", file=sys.stderr)
        return EXIT_BROKEN
    print(f"{path}: {count} entries, hash chain verified; head {head}")
    return EXIT_OK
