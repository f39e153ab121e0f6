"""Retention in the background: ``Purger`` applies a policy every minute in
a thread of its own, so a purge never runs on the event loop nor holds a
request. ``jobstatus serve`` starts one while a policy is set; an embedder
starts and stops one the same way (see docs/retention.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from jobstatus_core import Store, StoreUnavailable
from jobstatus_core.errors import one_line_reason
from jobstatus_core.retention import (
    DEFAULT_TOMBSTONES,
    Policy,
    Purged,
    expiring_store,
    purge,
)

PURGE_EVERY_SECONDS = 60.0
#: The longest rest between two batches of a purge.
MAX_REST_SECONDS = 1.0

logger = logging.getLogger("jobstatus.retention")


class Purger:
    """Purges ``store`` by ``policy`` now, then every ``every`` seconds,
    until ``stop``. A failing purge logs a warning and is tried again at the
    next turn. Raises ``ConfigError`` at once if the store does not expire
    jobs."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        *,
        tombstones: float = DEFAULT_TOMBSTONES,
        every: float = PURGE_EVERY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        expiring_store(store)
        self.store = store
        self.policy = policy
        self.tombstones = tombstones
        self.every = every
        self.clock = clock
        #: Purges done so far (successful or not): tests and metrics read it.
        self.turns = 0
        self.last: Purged | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Purger:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="jobstatus-purger", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop, waiting for a purge under way to end its batch (not the
        whole purge). Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Purger:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def purge_once(self) -> Purged | None:
        """One purge as of now; None (and a warning logged) if it failed."""
        try:
            purged = purge(
                self.store,
                self.policy,
                now=self.clock(),
                tombstones=self.tombstones,
                between=_GiveWay(self._stopping),
            )
        except _Stopping:
            return None  # the rest waits for the next life of the server
        except StoreUnavailable as exc:
            # Not a fault of the purge: a store down says so in /readyz and
            # in each request's log line, and a file index still being built
            # (the first turn of a server on a big store) is no fault at all.
            logger.info(
                "retention: the store is unavailable, purging in %gs: %s",
                self.every,
                one_line_reason(exc),
            )
            return None
        except Exception as exc:
            logger.warning(
                "retention: purge failed, trying again in %gs: %s",
                self.every,
                one_line_reason(exc),
            )
            return None
        finally:
            self.turns += 1
        if purged.total or purged.forgotten:
            logger.info("retention: %s", purged.summary())
        self.last = purged
        return purged

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.purge_once()
            self._stopping.wait(self.every)


class _Stopping(Exception):
    """The server stops: a purge under way ends after its batch."""


class _GiveWay:
    """Between two batches of a purge, rest as long as the batch took: the
    purger shares the process (and its GIL) with live requests, and takes at
    most half of it. A server that stops ends the purge there."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._since = time.monotonic()

    def __call__(self) -> None:
        rest = min(time.monotonic() - self._since, MAX_REST_SECONDS)
        if self._stopping.wait(rest):
            raise _Stopping
        self._since = time.monotonic()
