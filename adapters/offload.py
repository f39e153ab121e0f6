"""Blocking store calls off the event loop, one thread hop per loop iteration."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from jobstatus_core import batchreads

T = TypeVar("T")

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class _Batch(list[_Call]):
    """The calls of one loop iteration, in the order they were asked."""

    #: Set once the batch is handed to the workers: no call joins it after
    #: (each call of a batch was asked before it started, which
    #: ``batchreads`` relies on).
    sent = False


THREAD_NAME = "jobstatus-store"


class StoreThreads:
    """Runs blocking calls on a few worker threads, batched per loop iteration.

    A thread hop per call (anyio's ``to_thread.run_sync``) wakes a worker and
    then the loop once per request; with many polls in flight those wake-ups,
    not a 20 µs SQLite read, are most of a request's cost. Here every call
    that reaches :meth:`run` during one iteration of the loop travels to a
    worker in one batch, and the batch's results come back in one callback:
    one hop each way, however many requests share it.

    Up to ``max_workers`` batches run at once, so one slow call (a cold disk,
    a Redis timeout) holds up only the calls of its own batch. Workers left
    idle for ``idle_seconds`` exit. Outside asyncio (trio), calls go to
    anyio's thread pool one by one.
    """

    def __init__(self, max_workers: int = 8, idle_seconds: float = 10.0) -> None:
        self._batches: queue.SimpleQueue[_Batch] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._busy = 0
        self._max_workers = max_workers
        self._idle_seconds = idle_seconds
        # (loop, the batch it is gathering), per thread: a thread runs one
        # loop at a time.
        self._gathering = threading.local()
        #: Calls handed to the workers so far: with a ``TriesInline`` store,
        #: the reads that would have waited on the loop.
        self.calls = 0

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on a worker thread; its result or exception here."""
        self.calls += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return await anyio.to_thread.run_sync(call)
        future: asyncio.Future[T] = loop.create_future()
        gathering: tuple[asyncio.AbstractEventLoop, _Batch] | None = getattr(
            self._gathering, "current", None
        )
        # Checked against the running loop and the batch: a loop that
        # stopped before sending its batch must not leave the next loop of
        # this thread adding calls to a batch nobody will send, nor a loop
        # that sent it from another thread meanwhile add to a batch gone.
        if gathering is not None and gathering[0] is loop and not gathering[1].sent:
            batch = gathering[1]
        else:
            batch = _Batch()
            self._gathering.current = (loop, batch)
            loop.call_soon(self._send_batch, batch)
        batch.append((call, future))
        return await future

    def _send_batch(self, batch: _Batch) -> None:
        batch.sent = True
        gathering = getattr(self._gathering, "current", None)
        if gathering is not None and gathering[1] is batch:
            self._gathering.current = None
        with self._lock:
            # Put and count under one lock: a worker that is about to exit
            # for idleness checks the queue under it too, so no batch is
            # left without a worker.
            self._batches.put(batch)
            idle = self._workers - self._busy
            start = self._batches.qsize() > idle and self._workers < self._max_workers
            if start:
                self._workers += 1
        if start:
            threading.Thread(target=self._work, name=THREAD_NAME, daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                batch = self._batches.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._batches.empty():
                        self._workers -= 1
                        return
                continue
            with self._lock:
                self._busy += 1
            try:
                _run_batch(batch)
            finally:
                with self._lock:
                    self._busy -= 1


def _run_batch(batch: _Batch) -> None:
    outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
    # Every call was asked before the batch started: a value read during it
    # may answer them all (``batchreads``).
    with batchreads.batch():
        for call, future in batch:
            try:
                outcomes.append((future, True, call()))
            except BaseException as exc:  # handed to the awaiting task, as raised
                outcomes.append((future, False, exc))
    loop = batch[0][1].get_loop()
    # A loop closed while the batch ran has nobody waiting on it.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.cancelled():
            continue  # the request went away; its answer has no reader
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
