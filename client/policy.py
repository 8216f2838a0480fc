"""The member's privacy policy: rules the member enforces on every instruction it receives.

A YAML file the member writes (``deployment.member_dir/policy.yaml``; ``member join``
names it in the SuperNode's node config as ``policy``). Every key is optional; an
unknown key or a value of the wrong type is refused when the member joins and when an
instruction arrives, naming the key. An instruction that breaks a rule is answered with
an error reply naming the rule (the coordinator logs the member as failed with that
reason, and the round goes on without it); allowed metrics are filtered from every
reply before it leaves.

What the rules are checked against: the instruction itself where it shows (a SecAgg+
instruction's layout, the clipping norm that differential privacy sends, the compression
mode) and the run's configuration that came with the run (strategy, ``privacy.*``,
``federation.min_train_members``, ``federation.rounds``). Rounds are counted from the
member's audit log, which the round limits therefore need.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from flwr.app import Context, Message, MetricRecord
from flwr.app.error import Error
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fractofl.client.node_config import AUDIT_LOG_KEY, POLICY_KEY
from fractofl.core.trust.app_bundle import BundleError, parse_digest
from fractofl.core.trust.audit_log import AuditLogError, read_log
from fractofl.core.wire.member_evaluation import CLASS_COUNT_KEY
from fractofl.core.wire.update_protocol import (
    CLIPPING_NORM_KEY,
    COMPRESSION_MODE_KEY,
    EXAMPLES_KEY,
    PERSONALIZE_MESSAGE,
    POLICY_REFUSAL,
    UNIT_WEIGHT_KEY,
)

log = logging.getLogger("fractofl")

POLICY_FILE = "policy.yaml"
POLICY_REFUSED = 403  # the error code of a refusal (Flower's codes are small integers)
ALWAYS_SENT = frozenset({EXAMPLES_KEY, UNIT_WEIGHT_KEY})  # the mean's weights
DAY = timedelta(days=1)


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class MemberPolicy:
    """What this member accepts (every limit 0 or empty: no limit)."""

    require_secure_aggregation: bool = False
    require_dp: bool = False
    max_epsilon: float = 0.0
    min_members: int = 0
    allowed_strategies: tuple[str, ...] = ()
    allowed_compression: tuple[str, ...] = ()
    max_rounds_per_run: int = 0
    max_rounds_per_day: int = 0
    send_metrics: tuple[str, ...] = field(default=())
    """Metrics that may leave besides the example count; empty: every metric."""
    share_class_counts: bool = True
    """Whether an evaluation reply may say how many validation images of each class the
    member holds (its recall per class leaves either way)."""
    share_personal_model: bool = True
    """Whether this member sends its personalized model when a run asks for cross-site
    evaluation (``federation.cross_site``, off by default): a model of its own carries
    information about its data."""
    approved_code: tuple[str, ...] = ()
    """Code digests of app bundles this member runs besides fractofl's own
    (:mod:`fractofl.client.code_gate`; ``fractofl member approve`` keeps its own list)."""

    @property
    def counts_rounds(self) -> bool:
        """Whether a rule needs the audit log to count rounds."""
        return bool(self.max_rounds_per_run or self.max_rounds_per_day)


_KINDS: dict[str, type] = {
    "require_secure_aggregation": bool,
    "require_dp": bool,
    "max_epsilon": float,
    "min_members": int,
    "allowed_strategies": tuple,
    "allowed_compression": tuple,
    "max_rounds_per_run": int,
    "max_rounds_per_day": int,
    "send_metrics": tuple,
    "share_class_counts": bool,
    "share_personal_model": bool,
    "approved_code": tuple,
}


def _value(path: Path, key: str, value: Any) -> Any:
    kind = _KINDS[key]
    where = f"{path}: {key}={value!r}"
    if kind is bool:
        if not isinstance(value, bool):
            raise PolicyError(f"{where} must be true or false")
        return value
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{where} must be a list of names, e.g. [fedavg, fedprox]")
        if key == "approved_code":
            try:
                return tuple(parse_digest(v) for v in value)
            except BundleError as exc:
                raise PolicyError(f"{path}: approved_code: {exc}") from None
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{where} must be a number")
    if value < 0 or (kind is int and value != int(value)):
        raise PolicyError(
            f"{where} must be a whole number >= 0" if kind is int else f"{where} must be >= 0"
        )
    return kind(value)


def load_policy(path: Path) -> MemberPolicy:
    """The policy in ``path``; PolicyError naming the file and the key at fault."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read the member policy {path}: {exc}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"{path} must be a mapping of rules (see the README, member policy)")
    unknown = sorted(set(document) - set(_KINDS))
    if unknown:
        raise PolicyError(
            f"{path}: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(_KINDS)}"
        )
    return MemberPolicy(**{key: _value(path, key, v) for key, v in document.items()})


@dataclass(frozen=True)
class Instruction:
    """What a rule looks at in one instruction."""

    message_type: str
    run_id: int
    config: Mapping[str, Any]
    """The instruction's config record (round, compression, clipping norm)."""
    run_config: Mapping[str, Any]
    """The run's flat configuration (``strategy.name``, ``privacy.dp``, ...)."""
    secure: bool
    """Whether it is a SecAgg+ instruction."""


def _rounds_sent(log: Path, run_id: int) -> tuple[int, int]:
    """Rounds this member trained in (a training reply sent, counted once per run and
    round, as SecAgg+ answers a round in several messages): in run ``run_id``, and in
    the last 24 hours."""
    if not log.exists():
        return 0, 0
    now = datetime.now(UTC)
    in_run: set[int] = set()
    in_day: set[tuple[int, int]] = set()
    try:
        for entry in read_log(log):
            event = entry.event
            if event.get("kind") != "sent" or not str(event.get("message_type")).startswith(
                "train"
            ):
                continue
            if "error" in event or event.get("round") is None:
                continue
            run, server_round = int(event["run_id"]), int(event["round"])
            if run == run_id:
                in_run.add(server_round)
            sent = datetime.strptime(entry.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            if now - sent < DAY:
                in_day.add((run, server_round))
    except AuditLogError as exc:
        raise PolicyError(f"cannot count rounds in the audit log: {exc}") from None
    return len(in_run), len(in_day)


def refusal(policy: MemberPolicy, instruction: Instruction, audit_log: Path | None) -> str | None:
    """Why ``instruction`` breaks ``policy`` (the rule named), or None when it does not."""
    if not instruction.message_type.startswith("train"):
        return None  # evaluation sends back metrics only, which the filter bounds
    run = instruction.run_config
    if instruction.message_type == PERSONALIZE_MESSAGE and not policy.share_personal_model:
        return "share_personal_model: false: this member's personalized model stays here"
    if policy.require_secure_aggregation and not instruction.secure:
        return "require_secure_aggregation: this run's updates are not securely aggregated"
    dp = CLIPPING_NORM_KEY in instruction.config
    if policy.require_dp and not dp:
        return "require_dp: this run does not use differential privacy"
    if policy.max_epsilon and dp:
        epsilon = float(run.get("privacy.max_epsilon", 0.0) or 0.0)
        if not 0 < epsilon <= policy.max_epsilon:
            shown = "no limit" if epsilon <= 0 else f"{epsilon:g}"
            return f"max_epsilon={policy.max_epsilon:g}: this run's privacy.max_epsilon is {shown}"
    members = int(run.get("federation.min_train_members", 0) or 0)
    if policy.min_members and members < policy.min_members:
        return (
            f"min_members={policy.min_members}: this run aggregates rounds of as few as "
            f"{members} members (federation.min_train_members)"
        )
    strategy = str(run.get("strategy.name", ""))
    if policy.allowed_strategies and strategy not in policy.allowed_strategies:
        return f"allowed_strategies={list(policy.allowed_strategies)}: this run uses {strategy!r}"
    compression = str(instruction.config.get(COMPRESSION_MODE_KEY, "none"))
    if policy.allowed_compression and compression not in policy.allowed_compression:
        return (
            f"allowed_compression={list(policy.allowed_compression)}: this run asks for "
            f"{compression!r}"
        )
    if policy.counts_rounds:
        if audit_log is None:
            return "max_rounds_per_run/max_rounds_per_day need the member's audit log"
        in_run, in_day = _rounds_sent(audit_log, instruction.run_id)
        if policy.max_rounds_per_run and in_run >= policy.max_rounds_per_run:
            return f"max_rounds_per_run={policy.max_rounds_per_run}: already {in_run} in this run"
        if policy.max_rounds_per_day and in_day >= policy.max_rounds_per_day:
            return (
                f"max_rounds_per_day={policy.max_rounds_per_day}: already {in_day} in the "
                "last 24 hours"
            )
    return None


def allowed_metrics(policy: MemberPolicy, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics that may leave: the mean's weights, and ``send_metrics`` (all when it
    is empty), less the validation images per class unless ``share_class_counts``."""
    allowed = dict(metrics)
    if policy.send_metrics:
        keep = ALWAYS_SENT | set(policy.send_metrics)
        allowed = {key: value for key, value in allowed.items() if key in keep}
    if not policy.share_class_counts:
        allowed.pop(CLASS_COUNT_KEY, None)
    return allowed


def describe(policy: MemberPolicy) -> list[str]:
    """The rules that are on, one line each, for ``member join`` to show."""
    defaults = MemberPolicy()
    return [
        f"{f.name}: {getattr(policy, f.name)}"
        for f in dataclasses.fields(policy)
        if getattr(policy, f.name) != getattr(defaults, f.name)
    ]


def policy_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Refuse an instruction that breaks the member's policy (an error reply naming the
    rule), and keep the metrics the policy does not allow from leaving."""
    where = context.node_config.get(POLICY_KEY)
    if not where:
        return call_next(msg, context)
    policy = load_policy(Path(str(where)))
    audit = context.node_config.get(AUDIT_LOG_KEY)
    config: dict[str, Any] = {}
    if msg.has_content():
        for record in msg.content.config_records.values():
            config.update(record)
    instruction = Instruction(
        msg.metadata.message_type,
        msg.metadata.run_id,
        config,
        context.run_config,
        msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records,
    )
    reason = refusal(policy, instruction, Path(str(audit)) if audit else None)
    if reason is not None:
        log.warning(
            "refused an instruction of run %d: member policy %s", msg.metadata.run_id, reason
        )
        return Message(
            Error(code=POLICY_REFUSED, reason=f"{POLICY_REFUSAL} {reason}"), reply_to=msg
        )
    reply = call_next(msg, context)
    if reply.has_content() and (policy.send_metrics or not policy.share_class_counts):
        for name, metrics in list(reply.content.metric_records.items()):
            reply.content.metric_records[name] = MetricRecord(allowed_metrics(policy, metrics))
    return reply
