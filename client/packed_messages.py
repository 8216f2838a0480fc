"""The member's side of packed messages (``updates.pack_arrays`` on the coordinator).

A coordinator that packs sends each record of arrays as one array
(:mod:`fractofl.core.wire.packing`); this mod, around everything else the ClientApp runs,
reads them back before the member's code (its audit log and policy included) sees the
instruction, and packs the reply's records the same way. An instruction that came
unpacked gets an unpacked reply, so either coordinator setting works with every member.
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fractofl.core.wire.packing import (
    DAMAGED_CODE,
    PackedArray,
    PackingError,
    packed_records,
    unpacked_records,
)


def _replace(content: RecordDict, records: Mapping[str, Mapping[str, PackedArray]]) -> None:
    for name, arrays in records.items():
        content[name] = ArrayRecord(
            {
                key: Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=a.data)
                for key, a in arrays.items()
            }
        )


def packed_messages_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Unpack a packed instruction, run the rest of the ClientApp, pack its reply."""
    if not msg.has_content():
        return call_next(msg, context)
    try:
        unpacked = unpacked_records(msg.content.array_records)
    except PackingError as exc:
        reason = f"the instruction's packed arrays are damaged ({exc}); nothing was run"
        return Message(Error(code=DAMAGED_CODE, reason=reason), reply_to=msg)
    if not unpacked:
        return call_next(msg, context)
    _replace(msg.content, unpacked)
    reply = call_next(msg, context)
    if reply.has_content():
        _replace(reply.content, packed_records(reply.content.array_records))
    return reply
