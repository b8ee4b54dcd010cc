from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from models.batcher import MicroBatcher
from models.errors import OverloadedError, ShuttingDownError


def doubling(batch: Sequence[float]) -> list[np.ndarray]:
    return list(np.array([[x, 2 * x] for x in batch], dtype=np.float32))


def run(coro):
    return asyncio.run(coro)


def test_concurrent_callers_share_batches_and_each_gets_its_own_rows():
    async def scenario():
        sizes: list[int] = []

        def encode(batch):
            sizes.append(len(batch))
            return doubling(batch)

        batcher = MicroBatcher(encode, max_batch_size=8, max_wait_s=0.02, max_queue=100, name="t")
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([float(i)]) for i in range(20)))
        await batcher.stop()
        return results, sizes

    results, sizes = run(scenario())
    for i, rows in enumerate(results):
        assert np.stack(rows).tolist() == [[i, 2 * i]]
    assert sum(sizes) == 20
    assert max(sizes) > 1 and max(sizes) <= 8


def test_a_lone_caller_is_not_kept_waiting_for_company():
    async def scenario():
        batcher = MicroBatcher(doubling, max_batch_size=8, max_wait_s=30, max_queue=100, name="t")
        batcher.start()
        first = await asyncio.wait_for(batcher.submit([1.0]), 5)
        second = await asyncio.wait_for(batcher.submit([2.0]), 5)  # a 30 s wait would time out
        await batcher.stop()
        return first, second

    first, second = run(scenario())
    assert (np.stack(first).tolist(), np.stack(second).tolist()) == ([[1, 2]], [[2, 4]])


def test_one_caller_with_several_items_gets_rows_in_order():
    async def scenario():
        batcher = MicroBatcher(doubling, max_batch_size=2, max_wait_s=0, max_queue=100, name="t")
        batcher.start()
        rows = await batcher.submit([1.0, 2.0, 3.0, 4.0, 5.0])
        await batcher.stop()
        return rows

    assert np.stack(run(scenario()))[:, 0].tolist() == [1, 2, 3, 4, 5]


def test_batch_size_one_turns_batching_off():
    async def scenario():
        sizes: list[int] = []

        def encode(batch):
            sizes.append(len(batch))
            return doubling(batch)

        batcher = MicroBatcher(encode, max_batch_size=1, max_wait_s=0.01, max_queue=100, name="t")
        batcher.start()
        await asyncio.gather(*(batcher.submit([float(i)]) for i in range(6)))
        await batcher.stop()
        return sizes

    assert run(scenario()) == [1] * 6


def test_an_error_reaches_every_caller_of_the_failed_batch_and_the_batcher_goes_on():
    async def scenario():
        gate = threading.Event()
        calls = 0

        def encode(batch):
            nonlocal calls
            calls += 1
            if calls == 1:
                gate.wait(1)  # hold the first batch so the next callers queue up together
                return doubling(batch)
            if calls == 2:
                raise RuntimeError("boom")
            return doubling(batch)

        batcher = MicroBatcher(encode, max_batch_size=8, max_wait_s=0, max_queue=100, name="t")
        batcher.start()
        first = asyncio.create_task(batcher.submit([0.0]))
        await asyncio.sleep(0.05)
        failing = [asyncio.create_task(batcher.submit([float(i)])) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        gate.set()
        await first
        outcomes = await asyncio.gather(*failing, return_exceptions=True)
        after = await batcher.submit([7.0])
        await batcher.stop()
        return outcomes, after

    outcomes, after = run(scenario())
    assert all(isinstance(o, RuntimeError) and str(o) == "boom" for o in outcomes)
    assert np.stack(after).tolist() == [[7, 14]]


def test_a_full_queue_answers_overloaded_instead_of_waiting():
    async def scenario():
        gate = threading.Event()

        def encode(batch):
            gate.wait(2)
            return doubling(batch)

        batcher = MicroBatcher(encode, max_batch_size=1, max_wait_s=0, max_queue=2, name="t")
        batcher.start()
        running = asyncio.create_task(batcher.submit([0.0]))
        await asyncio.sleep(0.05)  # the consumer holds item 0; the queue is empty again
        queued = asyncio.create_task(batcher.submit([1.0, 2.0]))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError, match="queue is full") as caught:
            await batcher.submit([3.0])
        gate.set()
        await asyncio.gather(running, queued)
        await batcher.stop()
        return caught.value.retry_after

    assert run(scenario()) >= 1


def test_callers_that_went_away_are_skipped():
    async def scenario():
        gate = threading.Event()
        seen: list[list[float]] = []

        def encode(batch):
            gate.wait(1)
            seen.append(list(batch))
            return doubling(batch)

        batcher = MicroBatcher(encode, max_batch_size=8, max_wait_s=0, max_queue=100, name="t")
        batcher.start()
        first = asyncio.create_task(batcher.submit([0.0]))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit([1.0]))
        kept = asyncio.create_task(batcher.submit([2.0]))
        await asyncio.sleep(0.01)
        gone.cancel()
        gate.set()
        await first
        rows = await kept
        await batcher.stop()
        return seen, rows

    seen, rows = run(scenario())
    assert seen == [[0.0], [2.0]]
    assert np.stack(rows).tolist() == [[2, 4]]


def test_stop_serves_queued_items_then_refuses_new_ones():
    async def scenario():
        batcher = MicroBatcher(doubling, max_batch_size=2, max_wait_s=0.01, max_queue=100, name="t")
        batcher.start()
        pending = [asyncio.create_task(batcher.submit([float(i)])) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.stop()
        # The consumer is gone now: only rows it resolved before stopping can arrive.
        served = [np.stack(rows).tolist() for rows in await asyncio.wait_for(asyncio.gather(*pending), 1)]
        with pytest.raises(ShuttingDownError):
            await batcher.submit([9.0])
        return served

    assert run(scenario()) == [[[i, 2 * i]] for i in range(5)]
