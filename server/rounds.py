"""The coordinator's round loop: Flower's ``Strategy.start()`` loop, made resumable and
tolerant of members that fail, hang or disappear.

It calls the strategy exactly as ``Strategy.start()`` does (``configure_train``,
``send_and_receive``, ``aggregate_train``, the same for evaluation, then ``evaluate_fn``),
with what ``start()`` lacks: it begins at any round (resuming a checkpointed run), bounds
the wait for members (Flower's node sampling otherwise waits forever), re-sends a round
that got fewer than ``min_train_members`` replies, logs failed and late members by node
id, and hands every completed round to a callback (checkpoint, registry, progress). With
``federation.evaluate_with_training`` the members' evaluation of a round's model rides on
the next round's training exchange instead of an exchange of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fractofl.core.wire.update_protocol import EVALUATE_RECEIVED_KEY, EVALUATION_KEY, METRICS_KEY
from fractofl.server.errors import NotEnoughMembersError
from fractofl.server.random_state import RandomState
from fractofl.server.replies_in_time import send_and_receive
from fractofl.strategies.replies import reply_senders

log = logging.getLogger("fractofl")

POLL_S = 1.0
MAX_REASONS_SHOWN, MAX_REASON_CHARS = 3, 400  # failures quoted when a round cannot go on
# Flower's reason for an exception in a ClientApp: "<class 'pkg.SomeError'>:<'message'>"
_FLOWER_REASON = re.compile(r"^<class '(?:[\w.]*\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


# The Simulation Engine wraps a member's exception in Ray's, traceback included; the
# member's own exception is the first "package.module.Class: message" line in it.
_RAY_WRAPPED = "ray::ClientAppActor"
_RAISED_LINE = re.compile(r"^(?:\w+\.)+(\w+): (.+)$", re.MULTILINE)


def plain_reason(reason: str) -> str:
    """A member's error reason as a person reads it: ``SomeError: message``."""
    if _RAY_WRAPPED in reason and (raised := _RAISED_LINE.search(reason)):
        return f"{raised.group(1)}: {raised.group(2)}"
    match = _FLOWER_REASON.match(reason)
    return f"{match.group(1)}: {match.group(2)}" if match else reason


Exchange = Callable[[Grid, list[Message], float], list[Message]]
"""Sends a round's training messages and returns the replies that came back in time."""


@dataclass(frozen=True)
class RoundPolicy:
    """How long a round waits, how often it is re-sent (``federation.*``) and how its
    training messages are exchanged (plainly, or by secure aggregation)."""

    timeout_s: float
    retries: int
    min_train_members: int
    min_available_members: int
    exchange: Exchange = send_and_receive
    names: Mapping[int, str] = field(default_factory=dict)
    """Node id -> registered member name, for the log (a real federation)."""
    round_config: Callable[[int], ConfigRecord] = lambda _: ConfigRecord()
    """What each round's training instruction carries besides the strategy's settings
    (the scheduled learning rate)."""
    evaluate_with_training: bool = False
    """Members score each round's model in the next round's training reply
    (``federation.evaluate_with_training``, where the run allows it)."""

    def who(self, node: int) -> str:
        """A member as the log names it: ``org2 (node 123)``, or ``node 123``."""
        name = self.names.get(node)
        return f"{name} (node {node})" if name else f"node {node}"


@dataclass
class Participation:
    """Who was asked, who answered, who failed (with the reason) and who was late."""

    round: int
    attempts: int = 0
    sampled: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    stragglers: list[int] = field(default_factory=list)


RoundEnd = Callable[[int, ArrayRecord, Participation], None]


@dataclass
class RoundTimings:
    """Wall seconds of one round's phases on the coordinator, as the round loop saw them."""

    train_s: float = 0.0
    """Training instructions out until the last reply or the timeout, every attempt."""
    aggregate_s: float = 0.0
    """The strategy's aggregation of the training replies (with the update guard)."""
    member_eval_s: float = 0.0
    """Evaluation instructions out until the last reply or the timeout; 0 where the
    members scored the model in the next round's training replies."""
    coordinator_wait_s: float = 0.0
    """Once the members' scores are in, the wait for the coordinator's own scoring of the
    model (``score_ahead``) where that was the slower of the two."""


@contextlib.contextmanager
def _phase(timings: RoundTimings, name: str) -> Iterator[None]:
    """Set ``timings.<name>`` to the block's wall seconds."""
    started = time.monotonic()
    try:
        yield
    finally:
        setattr(timings, name, time.monotonic() - started)


def _wait_for_members(grid: Grid, needed: int, timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for ``needed`` connected members; how many there are."""
    deadline = time.monotonic() + timeout_s
    while (count := len(list(grid.get_node_ids()))) < needed and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return count


def _train_attempt(
    strategy: Strategy,
    grid: Grid,
    server_round: int,
    arrays: ArrayRecord,
    policy: RoundPolicy,
    seen: Participation,
    evaluate_received: bool = False,
) -> list[Message]:
    """Send one round of training and collect what comes back within the timeout
    (``evaluate_received``: members also score the model they receive)."""
    available = _wait_for_members(grid, policy.min_available_members, policy.timeout_s)
    if available < policy.min_available_members:
        log.warning(
            "round %d: %d member(s) connected after %.0f s, %d needed",
            server_round,
            available,
            policy.timeout_s,
            policy.min_available_members,
        )
        return []
    config = policy.round_config(server_round)
    if evaluate_received:
        config[EVALUATE_RECEIVED_KEY] = True
    messages = list(strategy.configure_train(server_round, arrays, config, grid))
    sampled = [msg.metadata.dst_node_id for msg in messages]
    replies = policy.exchange(grid, messages, policy.timeout_s)
    senders = reply_senders(messages, replies)
    seen.sampled = sampled
    seen.failed = {
        node: plain_reason(str(msg.error.reason))
        for node, msg in zip(senders, replies, strict=True)
        if msg.has_error()
    }
    seen.answered = [
        node for node, msg in zip(senders, replies, strict=True) if not msg.has_error()
    ]
    seen.stragglers = [node for node in sampled if node not in senders]
    for node, reason in seen.failed.items():
        log.warning("round %d: member %s failed: %s", server_round, policy.who(node), reason)
    for node in seen.stragglers:
        log.warning(
            "round %d: member %s did not answer within %.0f s (straggler)",
            server_round,
            policy.who(node),
            policy.timeout_s,
        )
    return replies


def _train(
    strategy: Strategy,
    grid: Grid,
    server_round: int,
    arrays: ArrayRecord,
    policy: RoundPolicy,
    on_participation: Callable[[Participation], None],
    evaluate_received: bool = False,
) -> tuple[list[Message], Participation]:
    """Training replies from at least ``min_train_members``, re-sending up to ``retries``
    times, each attempt's participation handed to ``on_participation`` as it ends;
    NotEnoughMembersError when even the last attempt falls short."""
    seen = Participation(server_round)
    for attempt in range(1, policy.retries + 2):
        seen = Participation(server_round, attempts=attempt)
        replies = _train_attempt(
            strategy, grid, server_round, arrays, policy, seen, evaluate_received
        )
        on_participation(seen)
        if len(seen.answered) >= policy.min_train_members:
            return replies, seen
        log.warning(
            "round %d, attempt %d of %d: %d usable replies, federation.min_train_members=%d",
            server_round,
            attempt,
            policy.retries + 1,
            len(seen.answered),
            policy.min_train_members,
        )
    failures = "; ".join(
        f"{policy.who(node)}: {reason[:MAX_REASON_CHARS]}"
        for node, reason in list(seen.failed.items())[:MAX_REASONS_SHOWN]
    )
    raise NotEnoughMembersError(
        f"round {server_round}: fewer than federation.min_train_members="
        f"{policy.min_train_members} members answered in {policy.retries + 1} attempts of "
        f"{policy.timeout_s:.0f} s each (federation.round_retries, federation.round_timeout)"
        + (f"; in the last attempt {failures}" if failures else "")
    )


MemberEvaluations = Callable[[int, list[Message]], None]
"""Receives a round's evaluation replies, each as its member sent it."""


def _shared_metrics_only(replies: list[Message]) -> None:
    """Keep in each reply only the metrics every reply has: a member whose policy keeps
    some from leaving (``send_metrics``, ``share_class_counts``) must not stop Flower's
    mean, which refuses replies with different keys."""
    records = [
        record
        for reply in replies
        if not reply.has_error() and reply.has_content()
        for record in reply.content.metric_records.values()
    ]
    if not records:
        return
    shared = set.intersection(*(set(record) for record in records))
    for reply in replies:
        if reply.has_error() or not reply.has_content():
            continue
        for name, record in list(reply.content.metric_records.items()):
            if set(record) != shared:
                kept = {key: value for key, value in record.items() if key in shared}
                reply.content.metric_records[name] = MetricRecord(kept)


def _ask_members_to_evaluate(
    strategy: Strategy,
    grid: Grid,
    server_round: int,
    arrays: ArrayRecord,
    policy: RoundPolicy,
    stragglers: Sequence[int],
) -> list[Message]:
    """Members' validation of the new global model in an exchange of its own; failures
    only reduce the average. The round's ``stragglers`` are not asked: a member whose
    training reply did not come within the round timeout is most likely gone (a machine
    that died mid-round is still listed until its heartbeat lapses), and asking it would
    make the round wait the timeout a second time."""
    messages = list(strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid))
    late = set(stragglers)
    asked = [m for m in messages if m.metadata.dst_node_id not in late]
    if skipped := sorted({m.metadata.dst_node_id for m in messages} & late):
        log.info(
            "round %d: not asking %s to evaluate (no training reply within %.0f s)",
            server_round,
            ", ".join(policy.who(node) for node in skipped),
            policy.timeout_s,
        )
    return send_and_receive(grid, asked, policy.timeout_s)


def evaluations_in(replies: Sequence[Message]) -> list[Message]:
    """Take each training reply's scores of the model its member received
    (``federation.evaluate_with_training``) out of it, as an evaluation reply of its own:
    the strategy's training aggregation then sees exactly the replies it expects."""
    found = []
    for reply in replies:
        if reply.has_error() or not reply.has_content():
            continue
        scores = reply.content.metric_records.get(EVALUATION_KEY)
        if scores is None:
            continue
        del reply.content[EVALUATION_KEY]
        found.append(make_message(reply.metadata, RecordDict({METRICS_KEY: scores})))
    return found


@dataclass
class _TrainedRound:
    """A round whose global model is aggregated and whose row, checkpoint and version
    wait for the members' scores of that model."""

    round: int
    arrays: ArrayRecord
    participation: Participation
    timings: RoundTimings
    scoring: Future[object] | None
    """The coordinator's own scoring of ``arrays`` (``score_ahead``), running meanwhile."""
    random_state: RandomState | None = None
    """Kept for a round that closes after the next round's members were sampled: the
    generators as the round left them, which its checkpoint must hold. None: the round
    closes with the generators as they are."""


@dataclass(frozen=True)
class _RoundClosing:
    """What closes a round once its members' scores are in."""

    strategy: Strategy
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None]
    on_round_end: RoundEnd
    on_member_evaluation: MemberEvaluations | None
    on_timings: Callable[[RoundTimings], None] | None

    def close(self, trained: _TrainedRound, evaluations: list[Message]) -> None:
        """Record the members' scores, wait for the coordinator's, then the round's row
        (``evaluate_fn``) and its end (checkpoint, publish) as the round left the
        generators."""
        if self.on_member_evaluation is not None:
            self.on_member_evaluation(trained.round, evaluations)
        _shared_metrics_only(evaluations)
        self.strategy.aggregate_evaluate(trained.round, evaluations)
        waiting = time.monotonic()
        if trained.scoring is not None:
            trained.scoring.result()
        trained.timings.coordinator_wait_s = time.monotonic() - waiting
        if self.on_timings is not None:
            self.on_timings(trained.timings)
        with _generators_as(trained.random_state):
            self.evaluate_fn(trained.round, trained.arrays)
            self.on_round_end(trained.round, trained.arrays, trained.participation)


@contextlib.contextmanager
def _generators_as(kept: RandomState | None) -> Iterator[None]:
    """Run the block with the generators in the ``kept`` state (None: as they are), and
    put the live state back after it."""
    if kept is None:
        yield
        return
    live = RandomState.capture()
    kept.restore()
    try:
        yield
    finally:
        live.restore()


SCORING_NICENESS = 10
"""How much lower than the round loop the coordinator's scoring ahead runs (Linux nice)."""
LOWEST_PRIORITY = 19  # the highest nice value


def _yield_to_the_exchange() -> None:
    """Lower the priority of the calling thread (the scoring thread) where the system lets
    one thread's priority be set (Linux). The scoring is background work: while members'
    training shares the machine (a simulation, a coordinator that is also a member) it
    takes the cores they leave idle instead of slowing the round's training, which the
    round waits on first."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + SCORING_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, LOWEST_PRIORITY))


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    rounds: range,
    policy: RoundPolicy,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
    on_participation: Callable[[Participation], None],
    on_round_end: RoundEnd,
    on_member_evaluation: MemberEvaluations | None = None,
    score_ahead: Callable[[ArrayRecord], object] | None = None,
    on_timings: Callable[[RoundTimings], None] | None = None,
) -> ArrayRecord:
    """Run ``rounds`` (e.g. ``range(4, 11)`` to resume after round 3) from ``arrays``;
    return the final global arrays. ``evaluate_fn(0, arrays)`` runs first when the
    range starts at round 1, as in ``Strategy.start()``. ``on_member_evaluation`` gets
    each round's evaluation replies as the members sent them. ``score_ahead(arrays)``,
    when given, runs in a thread from each round's aggregation until the round closes
    (the coordinator scores its test set while the members score the model, in an
    evaluation exchange or in the next round's training; ``evaluate_fn`` then finds the
    scores ready). ``on_timings`` gets each round's phase timings before
    ``evaluate_fn`` runs.

    With ``policy.evaluate_with_training`` the members score a round's model when the
    next round's training instruction brings it; that round closes (member scores,
    ``evaluate_fn``, ``on_round_end``) once the next round's training replies are in, and
    the participation of the next round is reported after it. The last round's model is
    scored in an evaluation exchange of its own."""
    strategy.summary()
    if rounds.start == 1:
        evaluate_fn(0, arrays)
    closing = _RoundClosing(strategy, evaluate_fn, on_round_end, on_member_evaluation, on_timings)
    last = rounds.stop - 1
    with ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="score-ahead", initializer=_yield_to_the_exchange
    ) as scorer:
        trained: _TrainedRound | None = None
        for server_round in rounds:
            log.info("[ROUND %d/%d]", server_round, last)
            timings = RoundTimings()
            attempts: list[Participation] = []
            try:
                with _phase(timings, "train_s"):
                    replies, participation = _train(
                        strategy,
                        grid,
                        server_round,
                        arrays,
                        policy,
                        on_participation if trained is None else attempts.append,
                        evaluate_received=trained is not None,
                    )
            except Exception:
                if trained is not None:  # the trained round is kept, without member scores
                    closing.close(trained, [])
                    for seen in attempts:
                        on_participation(seen)
                raise
            if trained is not None:
                closing.close(trained, evaluations_in(replies))
                for seen in attempts:
                    on_participation(seen)
            with _phase(timings, "aggregate_s"):
                aggregated, _ = strategy.aggregate_train(server_round, replies)
            if aggregated is None:
                log.warning(
                    "round %d: no update was accepted; the global model is unchanged",
                    server_round,
                )
            else:
                arrays = aggregated
            scoring = None if score_ahead is None else scorer.submit(score_ahead, arrays)
            trained = _TrainedRound(server_round, arrays, participation, timings, scoring)
            if policy.evaluate_with_training and server_round < last:
                trained.random_state = RandomState.capture()
                log.info(
                    "round %d: model aggregated from %d member(s); members score it with round "
                    "%d's training, then the round is recorded and published",
                    server_round,
                    len(participation.answered),
                    server_round + 1,
                )
                continue
            with _phase(timings, "member_eval_s"):
                evaluations = _ask_members_to_evaluate(
                    strategy, grid, server_round, arrays, policy, participation.stragglers
                )
            closing.close(trained, evaluations)
            trained = None
    return arrays
