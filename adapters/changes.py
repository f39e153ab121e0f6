"""Wake-ups when the store has changed, for waits and event streams.

One ``Changes`` per service, and one thread per process reading the store for
it while anybody waits — never a thread per waiter. Where the store declares
``Notifying`` it pushes a wake-up after each change it sees (through any
instance sharing it) and the thread reads its mark at once, and every
``SAFETY_POLL_SECONDS`` in case a notification was lost; for every other store
the thread reads the mark every ``interval`` seconds.

When the mark moved, the thread reads once what changed (``page`` after the
last position it saw, and ``buried`` where the store is ``Expiring``) and
wakes only the waiters and streams whose ``Interest`` matches a changed row.
The wake-up hands them what the look read (``Found``: every change after
the last position seen, up to the mark), so a stream of given jobs sends
its events from them without a read of its own: a change to one job costs
one read here, however many streams follow it. A new epoch, a mark that went
back or too many rows wakes everybody without rows, and everybody woken so
re-reads; a failed look wakes nobody and is tried again. A spurious or
merged wake-up costs a read, never a missed change.

Each look that finds changes moves ``generation`` on and remembers what it
found for a while; a waiter takes the generation before it reads the store,
and when it comes to wait, a change found since then that matches it (or
one the hub no longer remembers) answers it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from jobstatus_core import StatusService, Store
from jobstatus_core.interest import Found, Interest
from jobstatus_core.problems import ApiError
from jobstatus_core.protocol import Expiring, Notifying
from jobstatus_core.rows import Mark, Query, Row, Tombstone

logger = logging.getLogger("jobstatus.changes")

#: How often the mark of a store without notifications is read while some
#: request waits: the bound on a wake-up's delay for such stores.
POLL_SECONDS = 0.1
#: Where the store notifies, the mark is still read this often, in case a
#: notification was lost (a dropped pub/sub connection).
SAFETY_POLL_SECONDS = 1.0
#: How often a waiting loop looks whether its server is stopping.
SHUTDOWN_POLL_SECONDS = 0.25
#: How often a store that keeps failing the watching thread's looks is
#: logged again.
FAILURE_LOG_SECONDS = 60.0
#: Rows read per store call when looking what changed.
BATCH = 1000
#: Past this many changed rows in one look, everybody wakes instead (the
#: look would cost more than the herd).
MOST_ROWS = 20 * BATCH
#: Changes remembered for waiters that read the store before the look that
#: found them and only now come to wait; older ones wake such waiters.
REMEMBERED = 4096


@dataclass(eq=False)
class _Subscriber:
    """One wait in progress: what wakes it, and how."""

    interest: Interest
    #: The event loop of an async wait; None: a thread's (``wait_blocking``).
    loop: asyncio.AbstractEventLoop | None
    #: An async wait's future (cheaper than an ``asyncio.Event`` and
    #: ``wait_for``'s task: 1,000 streams of one job wake at once), or a
    #: thread's event.
    event: asyncio.Future[None] | threading.Event = field(repr=False)
    #: What the look that woke it read; None: woken without rows (everybody
    #: woken, or not woken yet).
    found: Found | None = field(default=None, repr=False)


class Changes:
    def __init__(self, store: Store, *, interval: float | None = None) -> None:
        self.store = store
        #: Moves on with each look that found changes (and each wake-up of
        #: everybody).
        self.generation = 0
        self.closing = False
        self.interval = interval or (
            SAFETY_POLL_SECONDS if isinstance(store, Notifying) else POLL_SECONDS
        )
        #: Where the store keeps tombstones, expiries wake their waiters too.
        self._expiring = store if isinstance(store, Expiring) else None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._users = 0
        self._held: dict[str, int] = {}
        self._watcher: threading.Thread | None = None
        self._shutdown_watched: set[asyncio.AbstractEventLoop] = set()
        self._shutdown_tasks: set[asyncio.Task[None]] = set()
        #: The store notified since the last look.
        self._pending = False
        #: Where the last look left the store; None: no look yet.
        self._seen: Mark | None = None
        #: (generation, job id, status) of recent changes, oldest first.
        self._recent: deque[tuple[int, str, str | None]] = deque()
        #: Waiters that took a generation before this one may have missed a
        #: change the hub no longer remembers (or everybody was woken).
        self._everyone = 0
        self._by_job: dict[str, set[_Subscriber]] = {}
        self._anyone: set[_Subscriber] = set()
        self._subscribers: set[_Subscriber] = set()
        self._unsubscribe = (
            store.subscribe(self.notify) if isinstance(store, Notifying) else None
        )

    @property
    def subscribed(self) -> int:
        """Waits and streams waiting for a wake-up now."""
        with self._lock:
            return len(self._subscribers)

    # -- the store's side --------------------------------------------------

    def notify(self) -> None:
        """Something may have changed; any thread, never blocks on the store:
        the watching thread looks."""
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def close(self) -> None:
        """Answer every waiter now (the server is stopping)."""
        self.closing = True
        self._wake_everyone()
        with self._cond:
            self._cond.notify_all()  # the watcher stops at once
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

    async def wait(
        self,
        generation: int,
        interest: Interest,
        timeout: float,
        until: asyncio.Future[None] | None = None,
    ) -> Found | None:
        """Until a change matching ``interest`` is found after ``generation``
        (the hub's when the waiter last read the store), ``timeout``, or
        ``until`` is done (a stream's client went away): what the look that
        woke it read, or None (re-read the store)."""
        if until is not None and until.done():
            return None
        loop = asyncio.get_running_loop()
        self._watch_shutdown(loop)
        woken: asyncio.Future[None] = loop.create_future()
        subscriber = _Subscriber(interest, loop, woken)
        if timeout <= 0 or not self._subscribe(subscriber, generation):
            return None
        timer = loop.call_later(timeout, _settle, woken)

        def stop(_: asyncio.Future[None]) -> None:
            _settle(woken)

        if until is not None:
            until.add_done_callback(stop)
        try:
            await woken
        finally:
            timer.cancel()
            if until is not None:
                until.remove_done_callback(stop)
            self._unsubscribe_one(subscriber)
        return subscriber.found

    def wait_blocking(
        self, generation: int, interest: Interest, timeout: float
    ) -> None:
        """``wait`` for a thread of its own (the WSGI adapter)."""
        event = threading.Event()
        subscriber = _Subscriber(interest, None, event)
        if timeout <= 0 or not self._subscribe(subscriber, generation):
            return
        try:
            event.wait(timeout)
        finally:
            self._unsubscribe_one(subscriber)

    def _subscribe(self, subscriber: _Subscriber, generation: int) -> bool:
        """Register ``subscriber``, unless a change it missed since
        ``generation`` answers it already (False)."""
        interest = subscriber.interest
        with self._lock:
            if self.closing or self._everyone > generation:
                return False
            for found, job_id, status in reversed(self._recent):
                if found <= generation:
                    break
                if interest.matches(job_id, status):
                    return False
            self._subscribers.add(subscriber)
            if interest.job_ids is None:
                self._anyone.add(subscriber)
            else:
                for job_id in interest.job_ids:
                    self._by_job.setdefault(job_id, set()).add(subscriber)
            return True

    def _unsubscribe_one(self, subscriber: _Subscriber) -> None:
        with self._lock:
            self._drop(subscriber)

    def _drop(self, subscriber: _Subscriber) -> None:
        """Under the lock."""
        self._subscribers.discard(subscriber)
        job_ids = subscriber.interest.job_ids
        if job_ids is None:
            self._anyone.discard(subscriber)
            return
        for job_id in job_ids:
            held = self._by_job.get(job_id)
            if held is not None:
                held.discard(subscriber)
                if not held:
                    del self._by_job[job_id]

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

    # -- waking ------------------------------------------------------------

    def _wake_everyone(self) -> None:
        with self._lock:
            self.generation += 1
            self._everyone = self.generation
            self._recent.clear()
            woken = set(self._anyone)
            for held in self._by_job.values():
                woken |= held
            self._anyone.clear()
            self._by_job.clear()
            self._subscribers.clear()
        _wake(woken)

    def _found(
        self,
        changed: list[tuple[str, str | None]],
        rows: dict[str, Row],
        tombs: dict[str, Tombstone],
    ) -> None:
        """Wake the subscribers of these (job id, status) changes, handing
        them ``rows`` and ``tombs``: every change up to the look's mark."""
        woken: set[_Subscriber] = set()
        with self._lock:
            self.generation += 1
            generation = self.generation
            found = Found(generation, rows, tombs)
            for job_id, status in changed:
                self._recent.append((generation, job_id, status))
                for subscriber in self._by_job.get(job_id, ()):
                    if subscriber.interest.matches(job_id, status):
                        woken.add(subscriber)
            # Those of any job: once each, by the statuses that changed.
            statuses = {status for _, status in changed}
            for subscriber in self._anyone:
                wanted = subscriber.interest.statuses
                if wanted is None or not wanted.isdisjoint(statuses):
                    woken.add(subscriber)
            while len(self._recent) > REMEMBERED:
                self._everyone = max(self._everyone, self._recent.popleft()[0])
            for subscriber in woken:
                subscriber.found = found
                self._drop(subscriber)
        _wake(woken)

    # -- the watching thread -------------------------------------------------

    def _watch(self) -> None:
        """Looks at the store while anybody waits; stops when nobody does."""
        with self._lock:
            self._seen = None
        failures, logged = 0, 0.0
        while not self.closing:
            with self._lock:
                if self._users == 0:
                    self._watcher = None
                    return
                self._pending = False
            try:
                self._look()
            except Exception as exc:
                # The next look starts again from the last position seen, so
                # nothing is missed once the store answers.
                failures += 1
                now = time.monotonic()
                if failures == 1:
                    # Waits and streams would otherwise sit unanswered for
                    # as long as the store fails (a stream still beating,
                    # its page "live"): woken once, each reads the store and
                    # answers its error, or ends for its client to resume.
                    self._wake_everyone()
                    logger.warning("watching the store failed: %s", exc)
                    logged = now
                elif now - logged >= FAILURE_LOG_SECONDS:
                    # Tried every interval: said once a minute, not ten times
                    # a second.
                    logger.warning(
                        "watching the store still fails (%d looks so far): %s",
                        failures,
                        exc,
                    )
                    logged = now
            else:
                if failures:
                    logger.warning(
                        "watching the store again after %d failed looks", failures
                    )
                failures = 0
            with self._cond:
                self._cond.wait_for(
                    lambda: self._pending or not self._users or self.closing,
                    self.interval,
                )

    def _look(self) -> None:
        """Read the mark; if it moved, read what changed and wake its
        subscribers."""
        store = self.store
        mark = store.mark()
        seen = self._seen
        # Another life, or another run of the store's server (restarted
        # behind its writes, failed over): positions may repeat, so nothing
        # read since the last look stands; everybody reads the store again.
        if seen is None or mark.life != seen.life or mark.head < seen.head:
            # The first look wakes everybody too: a waiter that read the store
            # before this thread started may have missed a change since.
            self._seen = mark
            self._wake_everyone()
            return
        if mark.head == seen.head:
            return
        changed: list[tuple[str, str | None]] = []
        # Handed to those woken only up to the mark: past it, a row read
        # here may stand before a change not read yet (the next look's).
        rows: dict[str, Row] = {}
        tombs: dict[str, Tombstone] = {}
        after = seen.head
        while len(changed) < MOST_ROWS:
            page = store.page(Query(after=after, limit=BATCH))
            changed += [(row.job_id, row.status) for row in page]
            rows.update((r.job_id, r) for r in page if r.position <= mark.head)
            if len(page) < BATCH:
                break
            after = page[-1].position
        if self._expiring is not None and len(changed) < MOST_ROWS:
            # An expiry takes a place in the change order too (SPEC §14).
            after = seen.head
            while len(changed) < MOST_ROWS:
                stones = self._expiring.buried(Query(after=after, limit=BATCH))
                changed += [(stone.job_id, stone.status) for stone in stones]
                tombs.update((t.job_id, t) for t in stones if t.position <= mark.head)
                if len(stones) < BATCH:
                    break
                after = stones[-1].position
        # Up to the mark read first, not to the last row: a row written while
        # this look ran is found again by the next (a read, not a miss).
        self._seen = mark
        if len(changed) >= MOST_ROWS:
            self._wake_everyone()
        elif changed:
            self._found(changed, rows, tombs)


def _wake(subscribers: set[_Subscriber]) -> None:
    """Set their events: one call into each event loop, however many wake."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for subscriber in subscribers:
        event = subscriber.event
        if isinstance(event, threading.Event):
            event.set()
        elif subscriber.loop is not None:
            by_loop.setdefault(subscriber.loop, []).append(event)
    for loop, events in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop that has closed
            loop.call_soon_threadsafe(_set_all, events)


def _set_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        _settle(future)


def _settle(future: asyncio.Future[None]) -> None:
    """Wake its wait, unless it was woken, timed out or cancelled already."""
    if not future.done():
        future.set_result(None)


def _server_stopping() -> bool:
    """Whether the uvicorn server of this process was told to stop: its
    SIGTERM handler is a method of the server."""
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
