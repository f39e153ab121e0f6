"""The recording API (SPEC §13): job states written by the code that runs jobs.

``Recorder(store_or_url)`` turns each call into one atomic change: it reads
the job, applies the rules of ``jobstatus_core.recording``, and writes with
``Store.swap`` — which applies only if nobody wrote the job in between; if
somebody did, it reads again. Out-of-order calls change nothing and return
False.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ParamSpec, TypeVar, cast

from jobstatus_core import ForkSafe, InvalidRecord, Store, StoreError, Versioned
from jobstatus_core.errors import OPENED_BEFORE_FORK
from jobstatus_core.recording import DEFAULT_TERMINAL, Change, apply, check_fields

from .registry import recording_store_from_url

#: Tries of one change against concurrent writers of the same job.
MAX_TRIES = 100
#: Jobs whose last written record and version a recorder keeps: a worker's
#: jobs in flight, many times over.
LAST_WRITTEN_JOBS = 1024
#: The ``message`` of an exception whose ``str()`` raises: what Python's own
#: tracebacks print for it (so RQ, which reads them back, records the same).
STR_FAILED = "<exception str() failed>"

P = ParamSpec("P")
R = TypeVar("R")


class Recorder:
    """Records job states in a store (an object, or a URL to open)."""

    def __init__(
        self,
        store: Store | str,
        *,
        clock: Callable[[], float] = time.time,
        terminal: Collection[str] = DEFAULT_TERMINAL,
        traceback: bool = False,
    ) -> None:
        self._url = store if isinstance(store, str) else None
        self.store: Store = (
            recording_store_from_url(store) if isinstance(store, str) else store
        )
        # A child forked after the store was opened must not use its
        # connection or observer threads (``_forked``).
        self._pid = os.getpid()
        self._fork_safe = isinstance(self.store, ForkSafe)
        self._fork_lock = threading.Lock()
        self.clock = clock
        self.terminal = frozenset(terminal)
        #: Whether ``failed`` with an exception records its traceback too.
        self.traceback = traceback
        # A store that tells the version it wrote lets the next change of the
        # same job swap at it without reading the job first.
        # (Checked once: an isinstance of a protocol costs tens of µs.)
        self._versioned: Versioned | None = (
            self.store if isinstance(self.store, Versioned) else None
        )
        self._last = _LastWritten(LAST_WRITTEN_JOBS)

    def queued(self, job_id: str, *, attempt: int | None = None, **fields: Any) -> bool:
        check_fields(fields)
        return self.change(Change(job_id, "queued", fields, attempt))

    def running(
        self, job_id: str, *, attempt: int | None = None, **fields: Any
    ) -> bool:
        check_fields(fields)
        return self.change(Change(job_id, "running", fields, attempt))

    def progress(
        self,
        job_id: str,
        done: float,
        total: float | None = None,
        message: str | None = None,
        *,
        attempt: int | None = None,
    ) -> bool:
        progress = {"done": done, "total": total, "message": message}
        return self.change(
            Change(job_id, "progress", attempt=attempt, progress=progress)
        )

    def done(
        self, job_id: str, response: Any = None, *, attempt: int | None = None
    ) -> bool:
        return self.change(Change(job_id, "done", attempt=attempt, response=response))

    def failed(
        self, job_id: str, error: BaseException | str, *, attempt: int | None = None
    ) -> bool:
        return self.change(
            Change(job_id, "failed", attempt=attempt, error=self._error(error))
        )

    def cancelled(self, job_id: str, *, attempt: int | None = None) -> bool:
        return self.change(Change(job_id, "cancelled", attempt=attempt))

    def meta(self, job_id: str, **patch: Any) -> bool:
        """Merge ``patch`` into the job's ``meta``, at any stage of its
        current attempt (``attempt`` is not a meta key: it is refused)."""
        if "attempt" in patch:
            raise InvalidRecord(
                "meta patches the current attempt; attempt is not a key"
            )
        return self.change(Change(job_id, "meta", patch))

    @contextmanager
    def track(self, job_id: str, **fields: Any) -> Iterator[None]:
        """``running`` on entry; ``done`` on a clean exit, or ``failed`` with
        the exception (re-raised). As a decorator: ``@recorder.tracked(id)``."""
        self.running(job_id, **fields)
        try:
            yield
        except BaseException as exc:
            self.failed(job_id, exc)
            raise
        self.done(job_id)

    def tracked(
        self, job_id: str, **fields: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """``track`` as a decorator; the function's return value is the response.
        (An ``async def`` takes ``AsyncRecorder.tracked``.)"""

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(function):
                raise TypeError(
                    f"{function.__name__} is async: use AsyncRecorder.tracked"
                )

            @functools.wraps(function)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                self.running(job_id, **fields)
                try:
                    result = function(*args, **kwargs)
                except BaseException as exc:
                    self.failed(job_id, exc)
                    raise
                self.done(job_id, result)
                return result

            return wrapper

        return decorate

    def change(self, change: Change) -> bool:
        """Apply one change atomically; False when it was out of order."""
        if self._pid != os.getpid():
            self._forked()
        known = self._guess(change)
        for _ in range(MAX_TRIES):
            fresh = known is None
            if known is None:
                row = self.store.read(change.job_id)
                known = (None, None) if row is None else (row.record, row.version)
            current, expected = known
            new = apply(current, change, self.clock(), self.terminal)
            if new is None:
                if fresh:
                    if expected is not None:
                        self._remember(change.job_id, current, expected)
                    return False
                known = None  # out of order against what may be old: read
                continue
            try:
                text = json.dumps(new, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidRecord(f"job {change.job_id}: not JSON: {exc}") from None
            except RecursionError:
                # Past what json.dumps can nest; shallower but past the
                # stores' bound, the store's put or swap refuses it.
                raise InvalidRecord(f"job {change.job_id}: nested too deep") from None
            if self._versioned is not None:
                version = self._versioned.swapped(new, expected=expected)
                if version is not None:
                    # Kept as the store gives it back, not as the caller's
                    # objects, which the caller may change after the call.
                    self._remember(change.job_id, json.loads(text), version)
                    return True
            elif self.store.swap(new, expected=expected):
                return True
            self._last.forget(change.job_id)
            known = None
        raise StoreError(
            f"job {change.job_id}: changed by other writers {MAX_TRIES} times in a row"
        )

    def _guess(
        self, change: Change
    ) -> tuple[Mapping[str, Any] | None, str | None] | None:
        """The job as this recorder last saw it, without asking the store;
        None when it must be read. Only a guess: the swap checks it."""
        known = self._last.get(change.job_id)
        if known is not None:
            return known
        if change.kind == "queued":
            return None, None  # a job is usually queued once, as a new one
        return None

    def _remember(
        self, job_id: str, record: Mapping[str, Any] | None, version: str
    ) -> None:
        if self._versioned is not None and record is not None:
            self._last.remember(job_id, (record, version))

    def _forked(self) -> None:
        """First use in a child forked since the store was opened: a
        fork-safe store is kept, one this recorder opened from a URL is
        opened again, any other is refused (the host's job: open it in each
        worker)."""
        with self._fork_lock:
            if self._pid == os.getpid():
                return  # another thread of this child did it
            if self._url is None and not self._fork_safe:
                raise StoreError(OPENED_BEFORE_FORK)
            if not self._fork_safe:
                # The parent's store is the parent's to close.
                self.store = recording_store_from_url(cast(str, self._url))
                self._versioned = (
                    self.store if isinstance(self.store, Versioned) else None
                )
            self._pid = os.getpid()

    def close(self) -> None:
        """Close the store if this recorder opened it from a URL."""
        if self._url is not None:
            self.store.close()

    def _error(self, error: BaseException | str) -> Mapping[str, Any]:
        if isinstance(error, str):
            return {"type": "Error", "message": error}
        found: dict[str, Any] = {
            "type": type(error).__name__,
            "message": message_of(error),
        }
        if self.traceback:
            import traceback

            found["traceback"] = "".join(traceback.format_exception(error))
        return found


def message_of(error: BaseException) -> str:
    """``str(error)``, or ``STR_FAILED`` when that raises: the job's end is
    recorded whatever the exception's ``__str__`` does."""
    try:
        return str(error)
    except Exception:
        return STR_FAILED


class AsyncRecorder:
    """``Recorder`` for async code: the same calls, awaited; each runs in a
    worker thread, so the event loop never waits on the store."""

    def __init__(self, store: Store | str, **options: Any) -> None:
        self.sync = Recorder(store, **options)

    async def queued(
        self, job_id: str, *, attempt: int | None = None, **fields: Any
    ) -> bool:
        return await asyncio.to_thread(
            functools.partial(self.sync.queued, job_id, attempt=attempt, **fields)
        )

    async def running(
        self, job_id: str, *, attempt: int | None = None, **fields: Any
    ) -> bool:
        return await asyncio.to_thread(
            functools.partial(self.sync.running, job_id, attempt=attempt, **fields)
        )

    async def progress(
        self,
        job_id: str,
        done: float,
        total: float | None = None,
        message: str | None = None,
        *,
        attempt: int | None = None,
    ) -> bool:
        return await asyncio.to_thread(
            functools.partial(
                self.sync.progress, job_id, done, total, message, attempt=attempt
            )
        )

    async def done(
        self, job_id: str, response: Any = None, *, attempt: int | None = None
    ) -> bool:
        return await asyncio.to_thread(
            functools.partial(self.sync.done, job_id, response, attempt=attempt)
        )

    async def failed(
        self, job_id: str, error: BaseException | str, *, attempt: int | None = None
    ) -> bool:
        return await asyncio.to_thread(
            functools.partial(self.sync.failed, job_id, error, attempt=attempt)
        )

    async def cancelled(self, job_id: str, *, attempt: int | None = None) -> bool:
        return await asyncio.to_thread(
            functools.partial(self.sync.cancelled, job_id, attempt=attempt)
        )

    async def meta(self, job_id: str, **patch: Any) -> bool:
        return await asyncio.to_thread(
            functools.partial(self.sync.meta, job_id, **patch)
        )

    @asynccontextmanager
    async def track(self, job_id: str, **fields: Any) -> AsyncIterator[None]:
        """``running`` on entry; ``done`` on a clean exit, or ``failed``."""
        await self.running(job_id, **fields)
        try:
            yield
        except BaseException as exc:
            await self.failed(job_id, exc)
            raise
        await self.done(job_id)

    def tracked(
        self, job_id: str, **fields: Any
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """``track`` as a decorator of an ``async def``; its result is the response."""

        def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(function)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                await self.running(job_id, **fields)
                try:
                    result = await function(*args, **kwargs)
                except BaseException as exc:
                    await self.failed(job_id, exc)
                    raise
                await self.done(job_id, result)
                return result

            return wrapper

        return decorate

    def close(self) -> None:
        self.sync.close()


class _LastWritten:
    """The record and version a recorder last wrote or read, per job: the
    most recently used ``size`` jobs. Thread-safe (an ``AsyncRecorder``
    records from worker threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, tuple[Mapping[str, Any], str]] = OrderedDict()

    def get(self, job_id: str) -> tuple[Mapping[str, Any], str] | None:
        with self._lock:
            found = self._jobs.get(job_id)
            if found is not None:
                self._jobs.move_to_end(job_id)
            return found

    def remember(self, job_id: str, known: tuple[Mapping[str, Any], str]) -> None:
        with self._lock:
            self._jobs[job_id] = known
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > self.size:
                self._jobs.popitem(last=False)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
