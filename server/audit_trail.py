"""The coordinator's audit trail: who started which run with which configuration, which
members answered, failed or were refused in each round (with a SHA-256 of every update
received, to compare with the members' own audit logs), every version published and every
deployment, in one hash-chained log (:mod:`fractofl.core.trust.audit_log`) at
``deployment.state_dir/audit.log``. ``fractofl coordinator audit`` prints and verifies it.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fractofl.core.config.run_config import RunConfig, config_digest
from fractofl.core.trust.audit_log import append_event
from fractofl.core.wire.update_protocol import is_member_refusal

AUDIT_FILE = "audit.log"


def coordinator_audit_path(cfg: RunConfig) -> Path:
    """Where the coordinator's audit trail lives (``deployment.state_dir/audit.log``)."""
    return Path(cfg.deployment.state_dir) / AUDIT_FILE


def who() -> dict[str, str]:
    """The user and host of this process, for the trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. in a container)
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}


class CoordinatorAudit:
    """Appends the coordinator's events to its trail."""

    def __init__(self, path: Path, names: Mapping[int, str] | None = None) -> None:
        self.path = path
        self.names = dict(names or {})

    def member(self, node: int) -> str:
        """A member as the trail names it: its registered name, or its node id."""
        return self.names.get(node, f"node {node}")

    def record(self, kind: str, **values: Any) -> None:
        """Append one event of ``kind``."""
        append_event(self.path, {"kind": kind, **values})

    def run_started(self, cfg: RunConfig, run_id: str, first_round: int, run_dir: Path) -> None:
        """The ServerApp started (or resumed) a run."""
        self.record(
            "run-started",
            run_id=run_id,
            config_digest=config_digest(cfg),
            strategy=cfg.strategy.name,
            rounds=cfg.federation.rounds,
            first_round=first_round,
            run_dir=str(run_dir),
            secure_aggregation=cfg.privacy.secure_aggregation,
            dp=cfg.privacy.dp,
            **who(),
        )

    def round_done(
        self,
        run_id: str,
        server_round: int,
        sampled: Sequence[int],
        answered: Sequence[int],
        failed: Mapping[int, str],
        stragglers: Sequence[int],
        updates: Sequence[Mapping[str, Any]],
    ) -> None:
        """Who was asked, answered, refused (its policy or code gate), failed or was late,
        and every update received: its member, bytes, SHA-256, and whether it was accepted
        (else why not)."""
        self.record(
            "round",
            run_id=run_id,
            round=server_round,
            asked=[self.member(n) for n in sampled],
            answered=[self.member(n) for n in answered],
            refused={self.member(n): r for n, r in failed.items() if is_member_refusal(r)},
            failed={self.member(n): r for n, r in failed.items() if not is_member_refusal(r)},
            stragglers=[self.member(n) for n in stragglers],
            updates=[dict(update) for update in updates],
        )

    def published(self, run_id: str, server_round: int, version: int, digest: str) -> None:
        """A round's model was published as a signed version."""
        self.record(
            "published", run_id=run_id, round=server_round, version=version, model_sha256=digest
        )

    def run_ended(self, run_id: str, outcome: str, last_round: int) -> None:
        """The run finished, or stopped (``outcome`` says why)."""
        self.record("run-ended", run_id=run_id, outcome=outcome, last_round=last_round)
