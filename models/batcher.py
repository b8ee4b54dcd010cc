"""Cross-request micro-batching: futures plus one consumer.

Each submit call gets one future for all its items. One consumer task takes
the first waiting item, adds whatever else is queued (waiting at most
`max_wait_s` for more when callers are arriving together) up to
`max_batch_size`, runs the forward pass in a worker thread and hands each item
its own result (an embedding row, a caption, a score); a call's future
resolves once all its items have theirs, in order. A failed batch fails the
future of every call with an item in it.
Items whose caller went away (cancelled future) are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from models.errors import OverloadedError, ShuttingDownError

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class BatchObserver(Protocol):
    """Told about every batch run (metrics live in the service, not here)."""

    def batch_done(self, tower: str, size: int, waits: Sequence[float], seconds: float) -> None:
        """`size` items, each queued for `waits` seconds, encoded in `seconds`."""
        ...


@dataclass(frozen=True)
class BatchLimits:
    """How batches are formed: the size cap, the wait for company, the queue bound."""

    max_batch_size: int
    max_wait_s: float
    max_queue: int


class _Call(Generic[ResultT]):
    """One submit call: a single future that resolves with every item's result, in order.

    One future per call rather than per item: a request of 64 queries, or a
    single search, costs the event loop one future and no gather.
    """

    __slots__ = ("future", "missing", "results")

    def __init__(self, future: asyncio.Future[list[ResultT]], size: int) -> None:
        self.future = future
        self.results: list[ResultT | None] = [None] * size
        self.missing = size

    def resolve(self, index: int, result: ResultT) -> None:
        if self.future.done():
            return
        self.results[index] = result
        self.missing -= 1
        if self.missing == 0:
            self.future.set_result(cast(list[ResultT], self.results))

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(slots=True)
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    call: _Call[ResultT]
    index: int
    queued_at: float = 0.0


class MicroBatcher(Generic[ItemT, ResultT]):
    """Batches items from concurrent callers into calls of `encode(items) -> one result per item`."""

    def __init__(
        self,
        encode: Callable[[Sequence[ItemT]], Sequence[ResultT]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        name: str,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and max_wait_s >= 0")
        self._encode = encode
        self.max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[ItemT, ResultT] | None] = asyncio.Queue(maxsize=max_queue)
        self.name = name
        self._observer = observer
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_batch_size = 0

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        """Start the consumer on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._consume(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Take no new items, finish every queued one, then stop the consumer."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.put(None)  # sentinel: everything before it still gets served
            await self._task

    async def submit(self, items: Sequence[ItemT]) -> list[ResultT]:
        """Encode `items` (possibly batched with other callers' items); results in order.

        Raises:
            OverloadedError: the queue has no room for all of `items`.
            ShuttingDownError: the batcher is stopping.
        """
        if self._closed:
            raise ShuttingDownError(f"the {self.name} encoder is shutting down")
        if self._task is None:
            raise ShuttingDownError(f"the {self.name} encoder is not running")
        free = self._queue.maxsize - self._queue.qsize()
        if len(items) > free:
            raise OverloadedError(
                f"the {self.name} encoder queue is full ({self._queue.qsize()} items waiting); retry shortly",
                retry_after=1.0,
            )
        if not items:
            return []
        loop = asyncio.get_running_loop()
        call: _Call[ResultT] = _Call(loop.create_future(), len(items))
        now = loop.time()
        for index, item in enumerate(items):
            self._queue.put_nowait(_Pending(item, call, index, now))
        return await call.future

    async def _consume(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = self._drain_into(batch)
            # A short wait lets callers that arrive together share one forward
            # pass; a lone caller (the last batch had one item too) is not kept waiting.
            concurrent = len(batch) > 1 or self._last_batch_size > 1
            if not stopping and concurrent and len(batch) < self.max_batch_size and self._max_wait_s > 0:
                await asyncio.sleep(self._max_wait_s)
                stopping = self._drain_into(batch)
            self._last_batch_size = len(batch)
            await self._run(batch)

    def _drain_into(self, batch: list[_Pending[ItemT, ResultT]]) -> bool:
        """Move queued items into `batch` up to the size cap; True if the stop sentinel was met."""
        while len(batch) < self.max_batch_size:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if pending is None:
                return True
            batch.append(pending)
        return False

    async def _run(self, batch: list[_Pending[ItemT, ResultT]]) -> None:
        live = [p for p in batch if not p.call.future.done()]  # cancelled (the caller went away) or failed
        if not live:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # The forward pass runs in a thread so the event loop keeps serving requests.
            results = await asyncio.to_thread(self._encode, [p.item for p in live])
            if len(results) != len(live):
                raise RuntimeError(f"{self.name} encoder returned {len(results)} results for {len(live)} items")
        except Exception as exc:
            log.exception("%s batch of %d failed", self.name, len(live))
            for p in live:
                p.call.fail(exc)
            return
        for p, result in zip(live, results, strict=True):
            p.call.resolve(p.index, result)
        if self._observer is not None:
            waits = [started - p.queued_at for p in live]
            self._observer.batch_done(self.name, len(live), waits, loop.time() - started)
