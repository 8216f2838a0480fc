"""Who answered, who failed and who was late, counted by the member each reply answers."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.core.wire.update_protocol import EVALUATE_RECEIVED_KEY, EVALUATION_KEY
from fractofl.server.errors import NotEnoughMembersError
from fractofl.server.rounds import (
    SCORING_NICENESS,
    Exchange,
    Participation,
    RoundPolicy,
    RoundTimings,
    _ask_members_to_evaluate,
    _train,
    _train_attempt,
    plain_reason,
    run_rounds,
)
from fractofl.strategies.registry import CommonStrategyArgs, build_strategy
from fractofl.strategies.replies import reply_senders
from tests.strategies.flower_grid import grid_with_nodes

WEIGHTS = {"w": np.zeros(4, dtype=np.float32)}


def _fedavg() -> Strategy:
    """FedAvg behind the update guard, every member asked, one enough."""
    common = CommonStrategyArgs(1.0, 1.0, 1, 1, 1, aggregate_metricrecords, aggregate_metricrecords)
    return build_strategy("fedavg", common, {}, CompressionSpec("none"), 5.0)


def _global_arrays() -> ArrayRecord:
    """The global model the coordinator sends: WEIGHTS."""
    return ArrayRecord({k: Array(v) for k, v in WEIGHTS.items()})


def _pushed(messages: Iterable[Message]) -> list[Message]:
    """The messages as a Grid's ``push_messages`` leaves them: each with its id."""
    messages = list(messages)
    for msg in messages:
        msg.metadata.__dict__["_message_id"] = msg.object_id
    return messages


def _answer(instruction: Message) -> Message:
    """A member's reply: a small update and its example count."""
    update = encode_update({"w": np.full(4, 0.1, dtype=np.float32)}, CompressionSpec("none"))
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in update.items()}),
            "metrics": MetricRecord({"num-examples": 10}),
        }
    )
    return Message(content, reply_to=instruction)


def _dead(instruction: Message) -> Message:
    """The reply Flower's SuperLink itself sends for a member whose node went away."""
    return create_message_error_unavailable_res_message(instruction.metadata, "node_unavail")


def test_flowers_error_replies_are_counted_for_the_member_they_answer() -> None:
    # Prepare: the run's messages, to three members of a real in-memory Grid
    _, nodes = grid_with_nodes(3)
    instructions = _pushed(
        Message(RecordDict(), dst_node_id=node, message_type="train") for node in nodes
    )
    replies = [_answer(instructions[0]), _dead(instructions[1]), _dead(instructions[2])]
    # Execute
    senders = reply_senders(instructions, replies)
    # Assert: the two error replies come from the SuperLink's node, but answer the others
    assert [r.metadata.src_node_id for r in replies[1:]] == [1, 1]
    assert senders == nodes


def test_two_dead_members_in_one_round_fail_once_each_by_their_own_id() -> None:
    # Prepare: a real in-memory Grid of 3 nodes and FedAvg behind the guard; the exchange
    # delivers one member's update and Flower's error replies for the other two
    grid, _ = grid_with_nodes(3)
    strategy = _fedavg()

    def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        sent = _pushed(messages)
        return [_answer(sent[0]), _dead(sent[1]), _dead(sent[2])]

    policy = RoundPolicy(
        timeout_s=5, retries=0, min_train_members=1, min_available_members=1, exchange=exchange
    )
    seen = Participation(round=2)
    arrays = _global_arrays()
    # Execute
    replies = _train_attempt(strategy, grid, 2, arrays, policy, seen)
    # Assert: every member counted once: one answered, two failed by their own ids
    assert len(replies) == 3 and len(seen.sampled) == 3
    assert seen.answered == [seen.sampled[0]]
    assert sorted(seen.failed) == sorted(seen.sampled[1:])
    assert seen.stragglers == []
    assert all("unavailable" in reason.lower() for reason in seen.failed.values())


def test_a_round_that_cannot_go_on_records_each_attempt_and_the_reasons() -> None:
    # Prepare: every member refuses, as a ClientApp that raised does (Flower's reason
    # format), and a round that needs two
    grid, _ = grid_with_nodes(3)
    strategy = _fedavg()
    flower_reason = (
        "<class 'fractofl.client.code_gate.CodeNotApprovedError'>:<'member code gate: no'>"
    )

    def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        return [Message(Error(code=0, reason=flower_reason), reply_to=m) for m in _pushed(messages)]

    policy = RoundPolicy(
        timeout_s=5,
        retries=1,
        min_train_members=2,
        min_available_members=1,
        exchange=exchange,
        names={},
    )
    arrays = _global_arrays()
    recorded: list[Participation] = []
    # Execute
    with pytest.raises(NotEnoughMembersError) as stopped:
        _train(strategy, grid, 1, arrays, policy, recorded.append)
    # Assert: each attempt recorded (members.csv gets a line per member and attempt), and
    # the reasons of the last attempt, as a person reads them
    assert [(seen.round, seen.attempts, len(seen.failed)) for seen in recorded] == [
        (1, 1, 3),
        (1, 2, 3),
    ]
    message = str(stopped.value)
    assert "fewer than federation.min_train_members=2 members answered in 2 attempts" in message
    assert "; in the last attempt node " in message
    assert message.count("CodeNotApprovedError: member code gate: no") == 3
    assert "<class" not in message
    assert plain_reason("member policy require_dp: no DP") == "member policy require_dp: no DP"


def _grid_pushing_as_the_superlink(nodes: int) -> tuple[Grid, list[int]]:
    """A real in-memory Grid of ``nodes`` connected nodes whose pushed messages come from
    the SuperLink's node, as the ServerApp's own Grid sends them to the link state."""
    grid, node_ids = grid_with_nodes(nodes)
    push = grid.push_messages

    def push_from_the_superlink(messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        for msg in messages:
            msg.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
        return push(messages)

    grid.push_messages = push_from_the_superlink  # type: ignore[method-assign]
    return grid, node_ids


def test_a_round_s_straggler_is_not_asked_to_evaluate(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: a real in-memory Grid of 3 connected nodes; the second was late in training
    # (as a machine that died mid-round, still listed until its heartbeat lapses)
    grid, nodes = _grid_pushing_as_the_superlink(3)
    strategy = _fedavg()
    policy = RoundPolicy(
        timeout_s=0.2, retries=0, min_train_members=1, min_available_members=1, names={}
    )
    arrays = _global_arrays()
    caplog.set_level("INFO", logger="fractofl")
    # Execute
    _ask_members_to_evaluate(strategy, grid, 3, arrays, policy, [nodes[1]])
    # Assert: evaluation instructions went to the two others only, and the log says why
    asked = sorted(msg.metadata.dst_node_id for msg in grid.state.message_ins_store.values())
    assert asked == sorted([nodes[0], nodes[2]])
    assert {msg.metadata.message_type for msg in grid.state.message_ins_store.values()} == {
        "evaluate"
    }
    assert f"round 3: not asking node {nodes[1]} to evaluate (no training reply within 0 s)" in (
        caplog.text
    )


def test_a_simulated_members_exception_is_read_out_of_rays_traceback() -> None:
    # Prepare: what the Simulation Engine reports for a member that raised
    reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor"
        '.run()\x1b[39m (pid=1, ip=192.0.2.2)\n  File "client/faults.py", line 57\n    raise '
        "SimulatedMemberFault(\nfractofl.client.faults.SimulatedMemberFault: simulated crash "
        "of member partition 0 in round 3\n\nThe above exception was the direct cause of the "
        "following exception:\n\nflwr.clientapp.client_app.ClientAppException: \nException "
        "ClientAppException occurred. Message: simulated crash'>"
    )
    # Execute / Assert: the member's own exception, on one line
    assert plain_reason(reason) == (
        "SimulatedMemberFault: simulated crash of member partition 0 in round 3"
    )


def _two_rounds(
    grid: Grid, score_ahead: object, evaluate_fn: object, on_timings: object = None
) -> None:
    """Two rounds of FedAvg on ``grid`` whose training replies come at once; evaluation
    instructions go out and get no answer within 0.5 s."""
    strategy = _fedavg()

    def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        return [_answer(m) for m in _pushed(messages)]

    policy = RoundPolicy(
        timeout_s=0.5, retries=0, min_train_members=1, min_available_members=1, exchange=exchange
    )
    run_rounds(
        strategy,
        grid,
        _global_arrays(),
        range(1, 3),
        policy,
        evaluate_fn=evaluate_fn,  # type: ignore[arg-type]
        on_participation=lambda seen: None,
        on_round_end=lambda server_round, arrays, seen: None,
        score_ahead=score_ahead,  # type: ignore[arg-type]
        on_timings=on_timings,  # type: ignore[arg-type]
    )


def test_the_coordinator_scores_each_round_s_model_while_the_members_evaluate_it() -> None:
    # Prepare: a real in-memory Grid of 2 nodes; scoring that waits until the round's
    # evaluation instructions are out, and an evaluate_fn that notes when it runs
    grid, _ = _grid_pushing_as_the_superlink(2)
    events: list[tuple[str, int, str]] = []

    priorities: list[int] = []
    main_priority = os.getpriority(os.PRIO_PROCESS, 0)

    def evaluation_instructions() -> int:
        store = grid.state.message_ins_store.values()  # type: ignore[attr-defined]
        return sum(msg.metadata.message_type == "evaluate" for msg in store)

    def score_ahead(arrays: ArrayRecord) -> None:
        asked_before = 2 * sum(e[0] == "scored" for e in events)
        deadline = time.monotonic() + 10
        while evaluation_instructions() <= asked_before and time.monotonic() < deadline:
            time.sleep(0.01)
        events.append(("scored", evaluation_instructions(), threading.current_thread().name))
        priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> None:
        events.append(("evaluated", server_round, threading.current_thread().name))

    # Execute
    _two_rounds(grid, score_ahead, evaluate_fn)
    # Assert: round 0 is scored before any member is asked; in each round the scoring ran
    # in a thread of its own while that round's 2 evaluation instructions were out, and
    # it was done before the round's evaluate_fn
    main = threading.current_thread().name
    assert events[0] == ("evaluated", 0, main)
    assert [e[:2] for e in events[1:]] == [
        ("scored", 2),
        ("evaluated", 1),
        ("scored", 4),
        ("evaluated", 2),
    ]
    assert all(e[2].startswith("score-ahead") for e in events if e[0] == "scored")
    assert all(e[2] == main for e in events if e[0] == "evaluated")
    # ... at a lower priority than the round loop, which keeps its own
    assert priorities == [min(main_priority + SCORING_NICENESS, 19)] * 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == main_priority


def test_a_failure_of_scoring_ahead_stops_the_round_loop() -> None:
    def score_ahead(arrays: ArrayRecord) -> None:
        raise OSError("coordinator test set unreadable")

    grid, _ = _grid_pushing_as_the_superlink(2)
    with pytest.raises(OSError, match="coordinator test set unreadable"):
        _two_rounds(grid, score_ahead, lambda server_round, arrays: None)


def test_each_round_s_phases_are_timed_before_its_evaluation() -> None:
    # Prepare: scoring that takes 0.8 s beside the members' evaluation, which waits out
    # its 0.5 s timeout (nobody answers)
    grid, _ = _grid_pushing_as_the_superlink(2)
    events: list[object] = []

    def score_ahead(arrays: ArrayRecord) -> None:
        time.sleep(0.8)  # the work being timed, not a wait for something

    # Execute
    _two_rounds(
        grid,
        score_ahead,
        lambda server_round, arrays: events.append(server_round),
        on_timings=events.append,
    )
    # Assert: each round's timings came before its evaluate_fn; the members' evaluation
    # took at least its timeout, and the round waited for the scoring beyond it
    assert events[0] == 0 and events[2] == 1 and events[4] == 2
    for timings in (events[1], events[3]):
        assert isinstance(timings, RoundTimings)
        assert timings.train_s >= 0 and timings.aggregate_s >= 0
        assert timings.member_eval_s >= 0.5
        assert timings.member_eval_s + timings.coordinator_wait_s >= 0.75


def _fused_rounds(
    grid: Grid,
    exchange: Exchange,
    events: list[tuple[object, ...]],
    rounds: int = 3,
    strategy: Strategy | None = None,
    on_end: Callable[[int], object] = lambda server_round: None,
) -> ArrayRecord:
    """``rounds`` rounds of FedAvg with ``federation.evaluate_with_training``; every
    callback notes itself in ``events``, with the model's first weight where it has one."""

    def first_weight(arrays: ArrayRecord) -> float:
        return round(float(arrays["w"].numpy()[0]), 6)

    policy = RoundPolicy(
        timeout_s=0.3,
        retries=0,
        min_train_members=1,
        min_available_members=1,
        exchange=exchange,
        evaluate_with_training=True,
    )
    return run_rounds(
        strategy or _fedavg(),
        grid,
        _global_arrays(),
        range(1, rounds + 1),
        policy,
        evaluate_fn=lambda r, arrays: events.append(("evaluated", r, first_weight(arrays))),
        on_participation=lambda seen: events.append(("participation", seen.round)),
        on_round_end=lambda r, arrays, seen: (
            events.append(("ended", r, first_weight(arrays))),
            on_end(r),
        ),
        on_member_evaluation=lambda r, replies: events.append(
            ("member scores", r, sorted(m.content["metrics"]["val-accuracy"] for m in replies))
        ),
    )


def _answer_with_scores(instruction: Message) -> Message:
    """A member's training reply: its update and, when asked, its "score" of the model it
    received (the model's first weight, so that the test can tell which model it scored)."""
    reply = _answer(instruction)
    if instruction.content["config"].get(EVALUATE_RECEIVED_KEY):
        received = float(instruction.content["arrays"]["w"].numpy()[0])
        reply.content[EVALUATION_KEY] = MetricRecord(
            {"num-examples": 5, "val-accuracy": round(received, 6)}
        )
    return reply


def test_members_score_each_round_s_model_in_the_next_round_s_training_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: a real in-memory Grid of 2 nodes; members that answer training at once, each
    # update adding 0.1 to the weights; nobody answers an evaluation instruction
    grid, _ = _grid_pushing_as_the_superlink(2)
    asked: list[bool] = []

    def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        asked.append(bool(messages[0].content["config"].get(EVALUATE_RECEIVED_KEY)))
        return [_answer_with_scores(m) for m in _pushed(messages)]

    events: list[tuple[object, ...]] = []
    caplog.set_level("INFO", logger="fractofl")
    # Execute
    final = _fused_rounds(grid, exchange, events)
    # Assert: round 1's training does not ask for scores (round 0's model is the start),
    # rounds 2 and 3 do; only the last round's model got evaluation instructions
    assert asked == [False, True, True]
    store = grid.state.message_ins_store.values()  # type: ignore[attr-defined]
    assert sorted(m.metadata.message_type for m in store).count("evaluate") == 2
    # ... round r closes with its members' scores of its own model (0.1 after round 1),
    # which came with round r+1's training replies, before round r+1's participation and
    # aggregation; the strategy aggregated every update (the scores taken out of replies)
    assert events == [
        ("evaluated", 0, 0.0),
        ("participation", 1),
        ("member scores", 1, [0.1, 0.1]),
        ("evaluated", 1, 0.1),
        ("ended", 1, 0.1),
        ("participation", 2),
        ("member scores", 2, [0.2, 0.2]),
        ("evaluated", 2, 0.2),
        ("ended", 2, 0.2),
        ("participation", 3),
        ("member scores", 3, []),  # its own exchange: nobody answered within 0.3 s
        ("evaluated", 3, 0.3),
        ("ended", 3, 0.3),
    ]
    assert float(final["w"].numpy()[0]) == pytest.approx(0.3)
    # ... and the log says why a trained round is not recorded yet
    for server_round in (1, 2):
        assert (
            f"round {server_round}: model aggregated from 2 member(s); members score it with "
            f"round {server_round + 1}'s training, then the round is recorded and published"
        ) in caplog.text
    assert "round 3: model aggregated" not in caplog.text


def test_a_round_closing_late_checkpoints_the_generators_as_it_left_them() -> None:
    # Prepare: note the generators' state after each round's aggregation, at each round's
    # end (what its checkpoint captures) and when each training exchange returns; the
    # exchange draws a number as Flower's sampling of members does, and so does each
    # round's end (as its publishing might)
    grid, _ = _grid_pushing_as_the_superlink(2)
    strategy = _fedavg()
    after_aggregation: dict[int, object] = {}
    at_end: dict[int, object] = {}
    exchanged: list[object] = []
    live_at_aggregation: list[bool] = []
    aggregate = strategy.aggregate_train

    def aggregate_and_note(server_round: int, replies: Iterable[Message]) -> object:
        live_at_aggregation.append(random.getstate() == exchanged[-1])
        result = aggregate(server_round, replies)
        after_aggregation[server_round] = random.getstate()
        return result

    strategy.aggregate_train = aggregate_and_note  # type: ignore[method-assign]

    def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        random.random()
        exchanged.append(random.getstate())
        return [_answer_with_scores(m) for m in _pushed(messages)]

    def note_end(server_round: int) -> None:
        at_end[server_round] = random.getstate()
        random.random()

    random.seed(7)
    # Execute
    _fused_rounds(grid, exchange, [], strategy=strategy, on_end=note_end)
    # Assert: rounds 1 and 2, closed during the next round's training, ended with the
    # generators as their aggregation left them, not as the next round's sampling moved
    # them; and closing them left the live sequence as the exchange had left it
    assert at_end[1] == after_aggregation[1] and at_end[2] == after_aggregation[2]
    assert at_end[1] != exchanged[1]
    assert live_at_aggregation == [True, True, True]


def test_a_next_round_that_fails_still_closes_the_round_before_it() -> None:
    # Prepare: round 2's training gets no reply at all
    grid, _ = _grid_pushing_as_the_superlink(2)
    calls: list[int] = []

    def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        calls.append(1)
        return [_answer_with_scores(m) for m in _pushed(messages)] if len(calls) == 1 else []

    events: list[tuple[object, ...]] = []
    # Execute
    with pytest.raises(NotEnoughMembersError, match="round 2: fewer than"):
        _fused_rounds(grid, exchange, events)
    # Assert: round 1 is kept (its row, checkpoint, version) without member scores, and
    # round 2's failed attempt is recorded after it
    assert events[1:] == [
        ("participation", 1),
        ("member scores", 1, []),
        ("evaluated", 1, 0.1),
        ("ended", 1, 0.1),
        ("participation", 2),
    ]
