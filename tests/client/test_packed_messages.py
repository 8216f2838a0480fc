"""Packed messages both ways: the coordinator's PackedGrid and the member's mod, through
Flower's own object serialisation (what the Deployment Engine sends, object by object)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

from fractofl.client.packed_messages import packed_messages_mod
from fractofl.core.model.architectures import build_model
from fractofl.core.wire.packing import DAMAGED_CODE, PACKED_NAME, PackedArray, is_packed, pack
from fractofl.server.packed_grid import packed_all, unpacked


@pytest.fixture(autouse=True)
def _flower_task() -> None:
    """Flower stamps new messages with the task's identity, as a ServerApp's process has."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0


@pytest.fixture(scope="module")
def trained_state() -> dict[str, torch.Tensor]:
    """A ResNet-18 state whose arrays all differ (as trained ones do: Flower sends equal
    arrays once)."""
    torch.manual_seed(0)
    state = build_model("resnet18", num_classes=4).state_dict()
    return {k: v + torch.rand_like(v) if v.is_floating_point() else v for k, v in state.items()}


def _instruction(state: dict[str, torch.Tensor], node: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"round": 1})})
    return Message(content, dst_node_id=node, message_type="train")


def _sent(message: Message) -> Message:
    """``message`` as the other side gets it: every object Flower would send, deflated and
    inflated again."""
    objects = get_all_nested_objects(message)
    contents = {object_id: obj.deflate() for object_id, obj in objects.items()}
    received = inflate_object_from_contents(message.object_id, contents)
    assert isinstance(received, Message)
    return received


def _context() -> Context:
    return Context(run_id=7, node_id=3, node_config={}, state=RecordDict(), run_config={})


def _doubling_handler(seen: list[Message]):  # type: ignore[no-untyped-def]
    def handler(msg: Message, context: Context) -> Message:
        seen.append(msg)
        arrays = msg.content.array_records["arrays"]
        doubled = {k: Array(np.asarray(a.numpy() * 2)) for k, a in arrays.items()}
        content = RecordDict({"arrays": ArrayRecord(doubled), "metrics": MetricRecord({"n": 1})})
        return Message(content, reply_to=msg)

    return handler


def test_a_model_travels_packed_both_ways_as_far_fewer_objects_and_arrives_unchanged(
    trained_state: dict[str, torch.Tensor],
) -> None:
    # Prepare: the same content for two members, as a strategy sends it
    first = _instruction(trained_state, node=3)
    second = Message(first.content, dst_node_id=4, message_type="train")
    unpacked_objects = len(get_all_nested_objects(_instruction(trained_state, node=3)))
    original = first.content
    # Execute: the coordinator packs, the member's mod unpacks, runs the handler, packs
    packed_first, packed_second = packed_all([first, second])
    received = _sent(packed_first)
    seen: list[Message] = []
    reply = packed_messages_mod(received, _context(), _doubling_handler(seen))
    back = unpacked(_sent(reply))
    # Assert: one packed array per message, shared, in ten-odd objects instead of hundreds
    assert packed_first.content is packed_second.content is not original
    assert len(original["arrays"]) == len(trained_state)  # the strategy's copy untouched
    assert is_packed(packed_first.content.array_records["arrays"])
    assert packed_first.content.config_records["config"]["round"] == 1
    packed_objects = len(get_all_nested_objects(packed_first))
    assert unpacked_objects > 200 and packed_objects < 20, (unpacked_objects, packed_objects)
    # the member's code saw the arrays as they were; its reply travelled packed
    state = seen[0].content.array_records["arrays"].to_torch_state_dict()
    assert list(state) == list(trained_state)
    assert all(torch.equal(state[k], v) for k, v in trained_state.items())
    assert is_packed(reply.content.array_records["arrays"])
    returned = back.content.array_records["arrays"].to_torch_state_dict()
    assert all(torch.equal(returned[k], v * 2) for k, v in trained_state.items())
    assert back.content.metric_records["metrics"]["n"] == 1


def test_an_unpacked_instruction_gets_an_unpacked_reply(
    trained_state: dict[str, torch.Tensor],
) -> None:
    seen: list[Message] = []
    reply = packed_messages_mod(
        _sent(_instruction(trained_state, 3)), _context(), _doubling_handler(seen)
    )
    assert len(seen) == 1
    assert len(reply.content.array_records["arrays"]) == len(trained_state)


def _damaged_record() -> ArrayRecord:
    whole = pack({"a": PackedArray("float32", (2,), "numpy.ndarray", bytes(8))})
    return ArrayRecord(
        {PACKED_NAME: Array(dtype=whole.dtype, shape=(1,), stype=whole.stype, data=whole.data[:-3])}
    )


def test_a_damaged_packed_instruction_is_answered_with_an_error_and_nothing_runs() -> None:
    seen: list[Message] = []
    instruction = Message(
        RecordDict({"arrays": _damaged_record()}), dst_node_id=3, message_type="train"
    )
    reply = packed_messages_mod(instruction, _context(), _doubling_handler(seen))
    assert seen == []
    assert reply.has_error() and reply.error.code == DAMAGED_CODE
    assert "packed arrays are damaged" in reply.error.reason and "truncated" in reply.error.reason


def test_a_damaged_packed_reply_becomes_an_error_reply_from_its_member() -> None:
    instruction = Message(RecordDict(), dst_node_id=3, message_type="train")
    reply = Message(RecordDict({"arrays": _damaged_record()}), reply_to=instruction)
    # Execute
    read = unpacked(reply)
    # Assert: the round goes on without it, and the log says why
    assert read.has_error() and read.error.code == DAMAGED_CODE
    assert "packed reply damaged" in read.error.reason and "truncated" in read.error.reason
    assert read.metadata.src_node_id == 3
    assert read.metadata.reply_to_message_id == reply.metadata.reply_to_message_id
    assert np.isfinite(read.metadata.created_at)


def test_messages_made_one_by_one_with_their_own_content_each_keep_their_own() -> None:
    # Packed copies are shared by content (by id): messages with contents of their own,
    # made one by one, must each still carry their own arrays.
    def instructions():  # type: ignore[no-untyped-def]
        for node in range(1, 6):
            arrays = {"a": Array(np.full(3, node, np.float32)), "b": Array(np.zeros(2))}
            yield Message(RecordDict({"arrays": ArrayRecord(arrays)}), node, "train")

    # Execute
    sent = packed_all(instructions())
    # Assert
    for node, message in enumerate(sent, start=1):
        back = unpacked(_sent(message)).content.array_records["arrays"]
        assert back["a"].numpy().tolist() == [node] * 3
