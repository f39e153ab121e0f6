"""The callbacks of a ``Notifying`` store, kept and called in one place."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("jobstatus.changes")


class Subscribers:
    """Callbacks told that the store may have changed.

    Thread-safe; called outside the lock, and one failing callback never
    stops the others (they often run on a store's own thread: watchdog's
    dispatcher, a pub/sub listener).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Keep ``callback``; returns the function that drops it."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("a change subscriber failed")
