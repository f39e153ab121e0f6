"""Wake-ups when the store may have changed, for waits and event streams.

One ``Changes`` per service. Where the store declares ``Notifying`` it pushes
a wake-up after each change it sees (through any instance sharing it); for
every other store one thread per process watches ``store.mark()`` every
``interval`` seconds while anybody waits — never a thread per waiter. A
wake-up only says "look again": waiters re-read the store, so a spurious or
merged wake-up costs a read, never a missed change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import weakref
from collections.abc import Iterator

from jobstatus_core import StatusService, Store
from jobstatus_core.problems import ApiError
from jobstatus_core.protocol import Notifying

logger = logging.getLogger("jobstatus.changes")

#: How often the mark of a store without notifications is read while some
#: request waits: the bound on a wake-up's delay for such stores.
POLL_SECONDS = 0.1
#: Where the store notifies, the mark is still read this often, in case a
#: notification was lost (a dropped pub/sub connection).
SAFETY_POLL_SECONDS = 1.0
#: How often a waiting loop looks whether its server is stopping.
SHUTDOWN_POLL_SECONDS = 0.25


class Changes:
    def __init__(self, store: Store, *, interval: float | None = None) -> None:
        self.store = store
        self.generation = 0
        self.closing = False
        self.interval = interval or (
            SAFETY_POLL_SECONDS if isinstance(store, Notifying) else POLL_SECONDS
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._users = 0
        self._held: dict[str, int] = {}
        self._watcher: threading.Thread | None = None
        self._shutdown_watched: set[asyncio.AbstractEventLoop] = set()
        self._shutdown_tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe = (
            store.subscribe(self.notify) if isinstance(store, Notifying) else None
        )

    # -- the store's side --------------------------------------------------

    def notify(self) -> None:
        """Something may have changed; any thread."""
        with self._cond:
            self.generation += 1
            self._cond.notify_all()
            loops = list(self._events)
        for loop in loops:
            with contextlib.suppress(RuntimeError):  # a loop that has closed
                loop.call_soon_threadsafe(self._wake, loop)

    def close(self) -> None:
        """Answer every waiter now (the server is stopping)."""
        self.closing = True
        self.notify()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- the waiters' side -------------------------------------------------

    @contextlib.contextmanager
    def waiter(self, limit: int, kind: str) -> Iterator[None]:
        """Hold one of ``limit`` places; past it, ``503`` with Retry-After."""
        with self._lock:
            # Waiters and streams are bounded apart: one kind never takes
            # the other's places.
            if self._held.get(kind, 0) >= limit:
                raise ApiError(503, f"Too many {kind}", (("retry-after", "1"),))
            self._held[kind] = self._held.get(kind, 0) + 1
            self._users += 1
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(
                    target=self._watch, name="jobstatus-changes", daemon=True
                )
                self._watcher.start()
        try:
            yield
        finally:
            with self._cond:
                self._held[kind] -= 1
                self._users -= 1
                if not self._users:
                    self._cond.notify_all()  # the watcher stops at once

    async def wait(self, generation: int, timeout: float) -> None:
        """Until the generation moves past ``generation``, or ``timeout``."""
        loop = asyncio.get_running_loop()
        self._watch_shutdown(loop)
        deadline = loop.time() + timeout
        while True:
            with self._lock:
                if self.generation != generation or self.closing:
                    return
                event = self._events.setdefault(loop, asyncio.Event())
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def wait_blocking(self, generation: int, timeout: float) -> None:
        """``wait`` for a thread of its own (the WSGI adapter)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.generation != generation or self.closing, timeout
            )

    def _watch_shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """While anybody waits on ``loop``, notice the server stopping: a
        server drains its requests before the app hears of it, so waits and
        streams are answered now rather than holding the shutdown up."""
        with self._lock:
            if loop in self._shutdown_watched:
                return
            self._shutdown_watched.add(loop)

        async def watch() -> None:
            try:
                while self._users and not self.closing:
                    if _server_stopping():
                        self.close()
                        return
                    await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
            finally:
                with self._lock:
                    self._shutdown_watched.discard(loop)

        self._shutdown_tasks.add(task := loop.create_task(watch()))
        task.add_done_callback(self._shutdown_tasks.discard)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            event = self._events.pop(loop, None)
        if event is not None:
            event.set()

    def _watch(self) -> None:
        """Reads the mark while anybody waits; stops when nobody does."""
        last = None
        while not self.closing:
            with self._lock:
                if self._users == 0:
                    self._watcher = None
                    return
            try:
                mark = self.store.mark()
            except Exception as exc:
                logger.warning("watching the store failed: %s", exc)
                mark = None
            # The first read notifies too: a waiter that read the store before
            # this thread started may have missed a change since.
            if mark is not None and mark != last:
                self.notify()
            last = mark if mark is not None else last
            with self._cond:
                self._cond.wait(self.interval)


def _server_stopping() -> bool:
    """Whether the uvicorn server of this process was told to stop: its
    SIGTERM handler is a method of the server (how sse-starlette finds it)."""
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return bool(getattr(server, "should_exit", False))


_hubs: weakref.WeakKeyDictionary[StatusService, Changes] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def changes_for(service: StatusService) -> Changes:
    """The service's one ``Changes``, made on first use."""
    with _hubs_lock:
        hub = _hubs.get(service)
        if hub is None or hub.store is not service.store:
            hub = _hubs[service] = Changes(service.store)
        return hub
