"""The callbacks of a ``Notifying`` store, kept and called in one place, and
the listener that hears other processes' changes while anybody subscribes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger("jobstatus.changes")


class Listener(Protocol):
    """A store's own thread hearing the changes other processes make (a
    Redis pub/sub connection, a PostgreSQL ``LISTEN``), started for the
    first subscriber and stopped after the last: it calls the function it
    was started with for each change it hears, and once after every gap
    in its hearing (a change made meanwhile was never heard)."""

    def wait_listening(self, timeout: float) -> None:
        """Until changes made from now on are heard, ``timeout`` at most
        (the store's server down: it keeps trying)."""

    def is_alive(self) -> bool:
        """False in a forked child: the parent's thread does not run there."""

    def stop(self) -> None:
        """End the thread; from the thread itself (a callback that
        unsubscribes), it ends once the callback returns."""


#: What starts a ``Listener`` calling the given function.
Listen = Callable[[Callable[[], None]], Listener]


class ListenerThread:
    """A ``Listener`` that is a thread running ``_listen`` (a store's own),
    which calls ``_notify``, sets ``_listening`` once it hears, and returns
    soon after ``_stopping`` is set (``_wake`` may hurry it)."""

    def __init__(self, name: str, notify: Callable[[], None]) -> None:
        self._notify = notify
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._listen, name=name, daemon=True)

    def _start(self) -> None:
        """Called by the subclass once it is ready to listen."""
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wait_listening(self, timeout: float) -> None:
        self._listening.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _wake(self) -> None:
        """Interrupts the thread's wait for a message; by default it looks
        at ``_stopping`` between waits of its own."""

    def _listen(self) -> None:
        raise NotImplementedError


class Subscribers:
    """Callbacks told that the store may have changed.

    Thread-safe; called outside the lock, and one failing callback never
    stops the others (they often run on a store's own thread: watchdog's
    dispatcher, a pub/sub listener).

    ``listen``: a store shared by other processes starts a ``Listener`` for
    the first callback (each ``add`` returns once it hears, or after
    ``timeout``) and stops it after the last one leaves.
    """

    def __init__(self, listen: Listen | None = None, timeout: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._listen = listen
        self._timeout = timeout
        self._listener: Listener | None = None

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Keep ``callback``; returns the function that drops it."""
        with self._lock:
            self._callbacks.append(callback)
            listener = self._listener
            if self._listen is not None and (
                listener is None or not listener.is_alive()
            ):
                try:
                    listener = self._listener = self._listen(self.notify)
                except BaseException:
                    # No thread (out of file descriptors, say): nobody
                    # would call it, and nobody was given a way to drop it.
                    self._callbacks.remove(callback)
                    raise
        if listener is not None:
            # Outside the lock: the callbacks are called meanwhile.
            listener.wait_listening(self._timeout)

        def remove() -> None:
            with self._lock:
                if callback not in self._callbacks:
                    return
                self._callbacks.remove(callback)
                stopping = None
                if not self._callbacks:
                    stopping, self._listener = self._listener, None
            if stopping is not None:
                stopping.stop()

        return remove

    @property
    def listener(self) -> Listener | None:
        """The listener running for the callbacks now, if any."""
        return self._listener

    def notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("a change subscriber failed")

    def close(self) -> None:
        """Drop every callback and stop the listener."""
        with self._lock:
            self._callbacks.clear()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
