"""A store's server that stopped answering: its calls refused at once for a
while, then tried again by one call at a time.

Each call to a server that is down waits the store's timeout before it
fails (a Redis call its retries too). The calls of a loop's turn run one
after another on a store thread (``adapters/offload``), so 40 requests
arriving together waited 40 timeouts for their ``503`` during an outage,
and a load balancer's probe timed out instead of seeing one. Once a few
calls in a row have failed to reach the server, the others are refused at
once with the last failure; after ``wait``, one call tries the server again
while the rest are still refused, and its answer ends the outage.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from jobstatus_core import StoreError, StoreUnavailable

#: Failures to reach the server in a row, with no answer between them, that
#: make an outage: one slow command among answers does not.
FAILURES_IN_A_ROW = 3


class Unreachable(StoreUnavailable):
    """The server could not be reached: refused, reset, silent, or no
    connection to it within the timeout. Only these make an outage; a
    statement the server cancelled at its timeout is an answer."""


class Outage:
    """Thread-safe; one per store object."""

    def __init__(
        self, wait: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._wait = wait
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._refused_until = 0.0
        self._trying = False
        self._last = StoreUnavailable("the store's server is unreachable")

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Around one call to the server: ``StoreUnavailable`` at once during
        an outage, but for the one call that tries again after ``wait``."""
        with self._lock:
            trying = False
            if self._failures >= FAILURES_IN_A_ROW:
                if self._trying or self._clock() < self._refused_until:
                    raise StoreUnavailable(str(self._last))
                self._trying = trying = True
        answered = False
        try:
            yield
            answered = True
        except Unreachable as exc:
            with self._lock:
                self._failures += 1
                self._last = exc
                if self._failures >= FAILURES_IN_A_ROW:
                    self._refused_until = self._clock() + self._wait
            raise
        except StoreError:
            answered = True  # an error the server answered: it is there
            raise
        finally:
            with self._lock:
                if trying:
                    self._trying = False
                if answered:
                    self._failures = 0
