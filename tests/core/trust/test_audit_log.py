"""The hash-chained audit log: appended by several processes, any edit shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fractofl.core.trust.audit_log import AuditLogError, append_event, read_log, verify_log

APPEND_MANY = """
import sys
from pathlib import Path
from fractofl.core.trust.audit_log import append_event
for index in range(int(sys.argv[3])):
    append_event(Path(sys.argv[1]), {"kind": "test", "writer": int(sys.argv[2]), "index": index})
"""


def test_appends_chain_and_verify(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    first = append_event(log, {"kind": "received", "round": 1})
    second = append_event(log, {"kind": "sent", "round": 1, "arrays_bytes": 10})
    assert verify_log(log) == (2, second.hash)
    entries = list(read_log(log))
    assert [e.event["kind"] for e in entries] == ["received", "sent"]
    assert entries[0].hash == first.hash
    assert json.loads(log.read_text().splitlines()[1])["prev"] == first.hash
    assert log.stat().st_mode & 0o777 == 0o600


def test_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    # Flower starts one ClientApp process per message: their appends must not interleave.
    log = tmp_path / "audit.log"
    workers = [
        subprocess.Popen([sys.executable, "-c", APPEND_MANY, str(log), str(w), "25"])
        for w in range(4)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    count, _ = verify_log(log)
    assert count == 100
    seen = {(e.event["writer"], e.event["index"]) for e in read_log(log)}
    assert len(seen) == 100


@pytest.fixture
def five_entries(tmp_path: Path) -> Path:
    log = tmp_path / "audit.log"
    for index in range(5):
        append_event(log, {"kind": "sent", "index": index, "arrays_bytes": 100 + index})
    return log


def test_an_edited_line_is_named(five_entries: Path) -> None:
    lines = five_entries.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"arrays_bytes": 102', '"arrays_bytes": 2')
    five_entries.write_text("".join(lines))
    with pytest.raises(AuditLogError, match="line 3: its content does not match its hash"):
        verify_log(five_entries)


def test_a_removed_line_is_named(five_entries: Path) -> None:
    lines = five_entries.read_text().splitlines(keepends=True)
    del lines[1]
    five_entries.write_text("".join(lines))
    with pytest.raises(AuditLogError, match="line 2: entry 3 where 2 was expected"):
        verify_log(five_entries)


def test_a_rehashed_line_still_breaks_the_link_to_the_next(five_entries: Path) -> None:
    # An editor who recomputes the edited line's own hash breaks the next line's link.
    from fractofl.core.trust.audit_log import _entry_hash

    lines = five_entries.read_text().splitlines()
    values = json.loads(lines[1])
    values["event"]["arrays_bytes"] = 1
    values["hash"] = _entry_hash(values["prev"], values["seq"], values["time"], values["event"])
    lines[1] = json.dumps(values, sort_keys=True)
    five_entries.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match="line 3: does not follow line 2"):
        verify_log(five_entries)


def test_a_log_cut_mid_line_is_reported_and_not_appended_to(five_entries: Path) -> None:
    data = five_entries.read_bytes()
    five_entries.write_bytes(data[:-20])
    with pytest.raises(AuditLogError, match="line 5: cut short"):
        verify_log(five_entries)
    with pytest.raises(AuditLogError, match="ends mid-line"):
        append_event(five_entries, {"kind": "sent"})
    assert five_entries.read_bytes() == data[:-20]  # nothing appended after the cut


def test_no_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="no audit log at"):
        verify_log(tmp_path / "missing.log")
