"""The local endpoint's single inference thread: admission, bounded waiting, micro-batching.

The model answers on one thread (``worker``, which also loaded it): torch's OpenMP pool
belongs to the thread that calls it, so torch called from many threads keeps several pools
spinning against each other on a small machine, which made every request about 30 %
slower (bench/RESULTS.md, serving). Requests therefore queue for that thread; when it
becomes free it takes up to ``max_batch`` of them at once (under load, after waiting
``batch_wait_s`` for more when fewer are there: clients that each wait for their answer send
their next requests a little apart), and the artifact answers them with one forward of the
model (``transform_batch``). With 8 clients, 8 images in one forward use the cores better
than 8 forwards of one.

A request waits at most ``max_wait_s`` for its batch to start on the thread (whatever holds
the thread: a long request, another batch), and at most ``max_waiting`` requests wait at
once; beyond either it is refused with :class:`BusyError` (the endpoint's 503 with
``Retry-After``), rather than an endless queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BATCHES_KEPT = 1024
Request = tuple[bytes, str, str | None]
"""A request as the artifact takes it: body, content type (with options), accept."""
BatchAnswerer = Callable[[list[Request]], Sequence[Any]]
"""The artifact's ``transform_batch`` bound to its model: an answer (or the request's
error) per request, in order."""


class BusyError(Exception):
    """A request refused because the model is busy; ``retry_after`` in whole seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Waiting:
    """One request's place in the queue: it either starts on the thread, or is abandoned
    while it still waits (then the thread skips it); never both."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.started = asyncio.Event()
        self.answer: asyncio.Future[Any] = loop.create_future()
        self._lock = threading.Lock()
        self._state = "waiting"

    def start(self) -> bool:
        """On the inference thread: take the request, unless it was abandoned."""
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "running"
        self.loop.call_soon_threadsafe(self.started.set)
        return True

    def abandon(self) -> bool:
        """Give up the place if the request has not started; ``False`` when it runs."""
        with self._lock:
            if self._state == "waiting":
                self._state = "abandoned"
                return True
            return False


class InferenceQueue:
    """Requests for the inference thread, answered in batches (see the module)."""

    def __init__(
        self,
        worker: ThreadPoolExecutor,
        answer_batch: BatchAnswerer,
        max_waiting: int,
        max_wait_s: float,
        max_batch: int = 1,
        batch_wait_s: float = 0.0,
    ) -> None:
        self.worker = worker
        self.answer_batch = answer_batch
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.admitted = 0
        self.batches: deque[int] = deque(maxlen=BATCHES_KEPT)
        """The sizes of the latest batches (for tests, and the wait under load)."""
        self._pending: deque[_Waiting] = deque()
        self._wakeup: asyncio.Event | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._failed: list[_Waiting] = []
        """The batch being answered, for its requests to get the error if it fails."""

    async def run(self, request: Request) -> Any:
        """The request's answer (or its error, returned as the artifact gave it);
        :class:`BusyError` when the model stays busy."""
        retry = max(1, math.ceil(self.max_wait_s / 2))
        if self.admitted >= self.max_waiting:
            raise BusyError(
                f"the endpoint is busy: {self.admitted} requests wait for the model "
                f"(serving.max_concurrent={self.max_waiting}); retry in {retry} s",
                retry,
            )
        loop = asyncio.get_running_loop()
        waiting = _Waiting(request, loop)
        self.admitted += 1
        try:
            self._pending.append(waiting)
            self._ensure_consumer(loop)
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await waiting.started.wait()
            except TimeoutError:
                if waiting.abandon():
                    with contextlib.suppress(ValueError):  # the thread may have taken it
                        self._pending.remove(waiting)  # its body is not kept while refused
                    raise BusyError(
                        f"the model stayed busy for {self.max_wait_s:g} s "
                        f"(serving.max_queue_wait_s); retry in {retry} s",
                        retry,
                    ) from None
            return await waiting.answer
        finally:
            self.admitted -= 1

    def _ensure_consumer(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        self._wakeup.set()
        if self._consumer is None or self._consumer.done():
            self._consumer = loop.create_task(self._consume())

    async def _consume(self) -> None:
        """Run batches while requests wait; then sleep until the next one comes."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                if self._under_load() and len(self._pending) < self.max_batch:
                    await asyncio.sleep(self.batch_wait_s)  # let more requests join
                try:
                    done = await loop.run_in_executor(self.worker, self._run_next)
                except BaseException as exc:  # a bug in the batch: its requests get it
                    for waiting in self._failed:
                        if not waiting.answer.done():
                            waiting.answer.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for waiting, answer in done:
                    waiting.answer.set_result(answer)

    def _under_load(self) -> bool:
        """Whether waiting ``batch_wait_s`` for more requests is worth it: the last batch
        held several (a single client's request is never held back)."""
        return self.batch_wait_s > 0 and bool(self.batches) and self.batches[-1] > 1

    def _run_next(self) -> list[tuple[_Waiting, Any]]:
        """On the inference thread, once it is free: up to ``max_batch`` of the requests
        waiting now (those not abandoned), answered together."""
        live: list[_Waiting] = []
        while len(live) < self.max_batch:
            try:  # deque operations are atomic beside the loop's appends and removals
                waiting = self._pending.popleft()
            except IndexError:
                break
            if waiting.start():
                live.append(waiting)
        self._failed = live
        if not live:
            return []
        self.batches.append(len(live))
        answers = self.answer_batch([waiting.request for waiting in live])
        return list(zip(live, answers, strict=True))
