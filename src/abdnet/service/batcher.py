"""Dynamic batching: items submitted by many requests, processed together on one thread.

A request thread (or coroutine) submits one item and gets a future. The worker thread takes
the first waiting item, then keeps collecting until ``max_batch`` items are in hand or
``max_wait_ms`` has passed since the first, and calls ``fn(items)`` once for all of them. Under
load every call is a full batch (the model runs at its batch throughput); alone, a request
waits at most ``max_wait_ms`` extra.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["DynamicBatcher", "BatcherClosed"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class BatcherClosed(RuntimeError):
    """An item was submitted to (or left in) a batcher that has been closed."""


class DynamicBatcher(Generic[T, R]):
    """Run ``fn`` on batches of submitted items; ``fn(items)`` returns one result per item.

    ``on_batch(size, seconds)`` is called after each batch (metrics). If ``fn`` raises, every
    item of that batch gets the exception.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        name: str = "batcher",
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future:
        fut: Future = Future()
        with self._guard:
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            self._queue.put((item, fut))
        return fut

    async def run(self, item: T) -> R:
        """Submit from a coroutine and await the result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the items already submitted, then stop the worker."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            self._queue.put((_STOP, None))
        self._thread.join(timeout)

    def _collect(self) -> tuple[list[tuple[T, Future]], bool]:
        first = self._queue.get()
        if first[0] is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item[0] is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._collect()
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            t0 = time.perf_counter()
            try:
                results = list(self._fn([item for item, _ in live]))
                if len(results) != len(live):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(live)} items"
                    )
            except BaseException as exc:  # the callers get it; the worker keeps running
                for _, fut in live:
                    fut.set_exception(exc)
            else:
                for (_, fut), res in zip(live, results):
                    fut.set_result(res)
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - t0)
        # Anything that raced in after the stop marker is refused, not left hanging.
        while True:
            try:
                _, fut = self._queue.get_nowait()
            except queue.Empty:
                break
            if fut is not None and fut.set_running_or_notify_cancel():
                fut.set_exception(BatcherClosed("the batcher was closed"))
