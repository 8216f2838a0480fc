"""A round's training exchange that hands each reply to the update guard as it arrives.

Collecting a round's replies together holds every member's update at once (members x
model: 45 GB for 1,000 ResNet-18 updates). This exchange takes the replies one by one as
they come (:func:`~fractofl.server.replies_in_time.replies_as_they_come`); the guard
screens each one, writes its bytes to the spill and keeps only its metrics, so at most one
update is in memory at a time. Only replies to this attempt's messages are pulled: a
member that answers after the round closed is a straggler of that round, never folded into
the next.
"""

from __future__ import annotations

from flwr.app import Message
from flwr.serverapp import Grid

from fractofl.server.replies_in_time import replies_as_they_come
from fractofl.strategies.guard import UpdateGuard


class StreamedExchange:
    """The round loop's exchange for ``updates.aggregation=streamed``."""

    def __init__(self, guard: UpdateGuard) -> None:
        if guard.spill is None:
            raise ValueError("a streamed exchange needs a guard with a spill folder")
        self.guard = guard

    def __call__(self, grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        """Send ``messages``; the replies that came back within ``timeout_s``, screened,
        their updates in the guard's spill and only their metrics kept."""
        replies: list[Message] = []
        for reply in replies_as_they_come(grid, messages, timeout_s):
            kept = self.guard.receive(reply)
            if kept is not None:
                replies.append(kept)
        return replies
