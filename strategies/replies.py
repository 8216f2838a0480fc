"""Which member a reply answers."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message


def reply_senders(instructions: Iterable[Message], replies: Iterable[Message]) -> list[int]:
    """The member each reply answers: the node its instruction went to.

    Flower's own error replies (a member that died, a ClientApp that crashed) come from the
    SuperLink's node, so ``src_node_id`` would name that node for every dead member; the
    instruction a reply answers (``reply_to_message_id``) names the member.
    """
    destination = {
        msg.metadata.message_id: msg.metadata.dst_node_id
        for msg in instructions
        if msg.metadata.message_id
    }
    return [
        destination.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        for reply in replies
    ]
