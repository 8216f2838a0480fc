"""The coordinator's side of packed messages (``updates.pack_arrays``).

:class:`PackedGrid` wraps the Grid Flower hands the ServerApp: every message it sends
carries each of its records of arrays packed into one array
(:mod:`fractofl.core.wire.packing`), and every reply's packed records are read back
before anyone sees them, so strategies, the update guard, secure aggregation and the
recorder see the arrays as the members' code made them. Members pack their reply when the
instruction came packed (:mod:`fractofl.client.packed_messages`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flwr.app import Array, ArrayRecord, Error, Message, RecordDict
from flwr.app.message.message import make_message
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fractofl.core.wire.packing import (
    DAMAGED_CODE,
    PackedArray,
    PackingError,
    packed_records,
    unpacked_records,
)

DAMAGED_REPLY = "packed reply damaged"


def with_records(
    content: RecordDict, replaced: Mapping[str, Mapping[str, PackedArray]]
) -> RecordDict:
    """``content`` with the records named in ``replaced`` swapped for those arrays (a new
    RecordDict: the one given may be shared by other messages)."""
    if not replaced:
        return content
    records = dict(content.items())
    for name, arrays in replaced.items():
        records[name] = ArrayRecord(
            {
                key: Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=a.data)
                for key, a in arrays.items()
            }
        )
    return RecordDict(records)


def packed_all(messages: Iterable[Message]) -> list[Message]:
    """``messages`` with their records of arrays packed; messages that share their content
    (a strategy sends every member the same) share its packed copy too."""
    # by id, with the original kept alive: a freed original's id could be a new object's
    copies: dict[int, tuple[RecordDict, RecordDict]] = {}
    out = []
    for message in messages:
        if message.has_content():
            content = message.content
            if id(content) not in copies:
                packed = with_records(content, packed_records(content.array_records))
                copies[id(content)] = (content, packed)
            message.content = copies[id(content)][1]
        out.append(message)
    return out


def unpacked(reply: Message) -> Message:
    """``reply`` with its packed records read back; a reply whose packed bytes are damaged
    is turned into an error reply that says so (the round goes on without it)."""
    if not reply.has_content():
        return reply
    try:
        reply.content = with_records(reply.content, unpacked_records(reply.content.array_records))
    except PackingError as exc:
        reason = f"{DAMAGED_REPLY}: {exc}"
        return make_message(reply.metadata, error=Error(code=DAMAGED_CODE, reason=reason))
    return reply


class PackedGrid(Grid):
    """``grid`` with every message's arrays packed on the way out and read back on the
    way in; everything else is ``grid``'s own."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Run) -> None:
        """Flower's: the run this Grid operates in."""
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        """Flower's: the run this Grid operates in."""
        return self.grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Flower's: a message for a node (packed when it is sent)."""
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Flower's: the connected nodes."""
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        """Flower's: the connected nodes with what Flower knows of them."""
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Send ``messages``, packed."""
        return self.grid.push_messages(packed_all(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that are in, read back."""
        return [unpacked(reply) for reply in self.grid.pull_messages(message_ids)]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's exchange (secure aggregation's stages use it), packed both ways."""
        replies = self.grid.send_and_receive(packed_all(messages), timeout=timeout)
        return [unpacked(reply) for reply in replies]
