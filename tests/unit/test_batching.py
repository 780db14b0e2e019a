"""The serving process's micro-batcher: merged requests, each answered with its own outputs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mlaas.serving.batching import MicroBatcher, Overloaded


class SlowDoubler:
    """A model that takes a while per call and records the batch sizes it was given."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.calls.append(len(items))
        time.sleep(self.seconds)
        if any(item < 0 for item in items):
            raise ValueError("negative input")
        return [2 * item for item in items]


def test_a_lone_request_is_answered_alone() -> None:
    model = SlowDoubler(0.0)
    batcher = MicroBatcher(model, max_batch_size=8)
    assert asyncio.run(batcher.submit([1, 2, 3])) == [2, 4, 6]
    assert model.calls == [3]


def test_concurrent_requests_share_model_calls_and_get_their_own_outputs() -> None:
    model = SlowDoubler()
    batcher = MicroBatcher(model, max_batch_size=16)

    async def clients() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit([i, 100 + i]) for i in range(20)))

    answers = asyncio.run(clients())
    assert answers == [[2 * i, 2 * (100 + i)] for i in range(20)]
    assert sum(model.calls) == 40
    assert len(model.calls) < 20  # requests were merged...
    assert max(model.calls) <= 16  # ...but never past the batch limit
    assert batcher.largest_batch == max(model.calls)


def test_a_request_bigger_than_the_limit_still_runs_alone() -> None:
    model = SlowDoubler(0.0)
    batcher = MicroBatcher(model, max_batch_size=2)
    assert asyncio.run(batcher.submit([1, 2, 3])) == [2, 4, 6]
    assert model.calls == [3]


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on() -> None:
    model = SlowDoubler()
    batcher = MicroBatcher(model, max_batch_size=16)

    async def scenario() -> tuple[list[object], list[int]]:
        failing = await asyncio.gather(
            batcher.submit([1]), batcher.submit([-1]), return_exceptions=True
        )
        return failing, await batcher.submit([5])

    failing, after = asyncio.run(scenario())
    assert any(isinstance(outcome, ValueError) for outcome in failing)
    assert after == [10]


def test_a_full_queue_refuses_with_overloaded() -> None:
    batcher = MicroBatcher(SlowDoubler(0.2), max_batch_size=1, max_queued=3)

    async def scenario() -> list[object]:
        # Both arrive before the model takes the first: the queue then holds 3 of 3 instances.
        return await asyncio.gather(
            batcher.submit([1, 2, 3]), batcher.submit([4]), return_exceptions=True
        )

    accepted, refused = asyncio.run(scenario())
    assert accepted == [2, 4, 6]
    assert isinstance(refused, Overloaded)
    assert "retry" in str(refused)


def test_a_client_that_hangs_up_does_not_stop_the_others() -> None:
    batcher = MicroBatcher(SlowDoubler(), max_batch_size=4)

    async def scenario() -> list[int]:
        gone = asyncio.ensure_future(batcher.submit([1]))
        waiting = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await waiting

    assert asyncio.run(scenario()) == [4]
