"""Adaptive batching inside the serving process: concurrent requests share one model call.

While the model works on one batch, the requests that arrive gather in a queue; the moment the
model is free they go as the next batch (up to `max_batch_size` instances). So batches grow with
the load by themselves, and a lone request is answered at once, with no wait for batch-mates.
`max_wait_ms` adds a deliberate wait for more requests before a batch leaves (0: none).

Why not BentoML's batchable API: it is reached through an HTTP hop from /predict to the same
server, and its dispatcher refuses (503) every request that waits longer than its latency budget.
At 64 clients on 2 cores it failed 15% of requests (503 shed, 500 when the hop's connection
dropped) and served no more than without batching (BENCHMARKS.md, RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

Item = TypeVar("Item")
Output = TypeVar("Output")


class Overloaded(RuntimeError):
    """More instances are waiting than the queue holds: the client should retry later."""


@dataclass
class _Request(Generic[Item, Output]):
    items: Sequence[Item]
    done: asyncio.Future[list[Output]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher(Generic[Item, Output]):
    """Runs `predict` (a blocking function of a list of items) on merged requests, one batch at a
    time, in a worker thread, so the event loop keeps accepting requests meanwhile."""

    def __init__(
        self,
        predict: Callable[[list[Item]], list[Output]],
        max_batch_size: int,
        max_wait_ms: float = 0.0,
        max_queued: int = 10_000,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queued = max_queued
        # How batching really went (tests and logs read them): counts, not lists, so a server
        # that runs for months holds no growing history.
        self.batches = 0
        self.largest_batch = 0
        self._queue: deque[_Request[Item, Output]] = deque()
        self._queued_items = 0
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[Item]) -> list[Output]:
        """The outputs for `items`, computed in a batch with whatever else is waiting."""
        if self._queued_items + len(items) > self.max_queued:
            raise Overloaded(
                f"{self._queued_items} instances are already waiting (the limit is "
                f"{self.max_queued}): retry shortly"
            )
        request: _Request[Item, Output] = _Request(items)
        self._queue.append(request)
        self._queued_items += len(items)
        self._wake()
        return await request.done

    def _wake(self) -> None:
        # A worker runs only while requests wait, so an idle batcher holds no task: one that a
        # hot swap replaced is dropped with the model it calls (`mlaas.serving.hot_swap`).
        if self._worker is None:  # created here: it belongs to the loop that serves requests
            self._worker = asyncio.get_running_loop().create_task(self._work())

    def _next_batch(self) -> list[_Request[Item, Output]]:
        """The oldest requests whose instances fit in one batch (at least one request)."""
        batch: list[_Request[Item, Output]] = []
        size = 0
        while self._queue:
            waiting = len(self._queue[0].items)
            if batch and size + waiting > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            size += waiting
        self._queued_items -= size
        return batch

    async def _work(self) -> None:
        try:
            while self._queue:
                if self.max_wait and self._queued_items < self.max_batch_size:
                    await asyncio.sleep(self.max_wait)
                batch = self._next_batch()
                await self._answer(batch)
        finally:
            # No await between the empty queue and this line: a request that arrives later
            # finds no worker and starts one.
            self._worker = None

    async def _answer(self, batch: list[_Request[Item, Output]]) -> None:
        items = [item for request in batch for item in request.items]
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(items))
        try:
            outputs = await anyio.to_thread.run_sync(self.predict, items)
        except Exception as error:  # every request of the batch learns what went wrong
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(error)
            return
        start = 0
        for request in batch:
            stop = start + len(request.items)
            if not request.done.done():  # a client that hung up has cancelled its future
                request.done.set_result(outputs[start:stop])
            start = stop
