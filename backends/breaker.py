"""How often inline reads may stall the event loop: a breaker per store.

A store that tries its reads on the event loop (``TriesInline``) refuses
what it can see would wait; this bounds what it cannot see coming.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from jobstatus_core import WouldBlock

#: How long one inline call may take before its store stops trying inline.
#: Above a read from an SSD (~0.1 ms, cheaper than the thread hop) and the
#: scheduler's preemptions of a busy machine (2 ms tripped it within
#: seconds of load on 2 shared cores), below a disk that stalls.
BUDGET_SECONDS = 0.010
#: How long a store then sends its reads to threads before trying again.
COOLDOWN_SECONDS = 5.0


class Breaker:
    """Bounds how often a store's inline calls can stall the loop.

    An inline call may be slow in ways it cannot see coming (a cold page, a
    path lookup on a stalled disk, a lock another thread holds while it
    reads): one that took longer than ``budget`` sends every inline attempt
    of the store to threads (``WouldBlock`` at once) for ``cooldown``. The
    loop is then held up by at most one slow call per cooldown. Thread-safe.
    """

    def __init__(
        self,
        budget: float = BUDGET_SECONDS,
        cooldown: float = COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.cooldown = cooldown
        self.clock = clock
        #: How many times an inline call went over the budget.
        self.trips = 0
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def allows(self) -> bool:
        """Whether inline calls are tried now."""
        return self.clock() >= self._paused_until

    def timed(self) -> _Timed:
        """One inline call: refused (``WouldBlock``) while paused, and timed."""
        return _Timed(self, self.begin())

    def begin(self) -> float:
        """An inline call begins now (returned, for ``ended``); refused
        (``WouldBlock``) while paused."""
        now = self.clock()
        if now < self._paused_until:
            raise WouldBlock("inline reads paused after a slow one")
        return now

    def ended(self, started: float) -> None:
        """An inline call that began at ``started`` is over."""
        ended = self.clock()
        if ended - started > self.budget:
            with self._lock:
                self.trips += 1
                self._paused_until = ended + self.cooldown


class _Timed:
    # A class, not contextlib's decorator: it is on every inline read's path
    # and costs a third of a generator's.
    __slots__ = ("_breaker", "_started")

    def __init__(self, breaker: Breaker, started: float) -> None:
        self._breaker = breaker
        self._started = started

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._breaker.ended(self._started)
