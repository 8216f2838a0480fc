"""A round's training exchange that hands each reply to the update guard as it arrives.

Flower's ``Grid.send_and_receive`` returns a round's replies together, so the coordinator
holds every member's update at once (members x model: 45 GB for 1,000 ResNet-18 updates).
This exchange pushes the same messages and pulls the replies as they come (Flower's own
``push_messages``/``pull_messages``, the calls ``send_and_receive`` is made of); the guard
screens each one, writes its bytes to the spill and keeps only its metrics, so at most one
update is in memory at a time. Only replies to this attempt's messages are pulled: a
member that answers after the round closed is a straggler of that round, never folded into
the next.
"""

from __future__ import annotations

import time

from flwr.app import Message
from flwr.serverapp import Grid

from fractofl.strategies.guard import UpdateGuard

PULL_INTERVAL_S = 0.2
"""Between pulls of a round's replies. Flower's gRPC grid waits 3 s between pulls of
``send_and_receive``; pulling more often keeps few replies waiting at the SuperLink and
ends the round as soon as the last one is in."""


class StreamedExchange:
    """The round loop's exchange for ``updates.aggregation=streamed``."""

    def __init__(self, guard: UpdateGuard, pull_interval_s: float = PULL_INTERVAL_S) -> None:
        if guard.spill is None:
            raise ValueError("a streamed exchange needs a guard with a spill folder")
        self.guard = guard
        self.pull_interval_s = pull_interval_s

    def __call__(self, grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        """Send ``messages``; the replies that came back within ``timeout_s``, screened,
        their updates in the guard's spill and only their metrics kept."""
        waiting = set(grid.push_messages(messages))
        deadline = time.monotonic() + timeout_s
        replies: list[Message] = []
        while waiting:
            for reply in grid.pull_messages(waiting):
                waiting.discard(reply.metadata.reply_to_message_id)
                kept = self.guard.receive(reply)
                if kept is not None:
                    replies.append(kept)
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(self.pull_interval_s)
        return replies
