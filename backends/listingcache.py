"""Listings kept for as long as they are still the exact answer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import NamedTuple

#: The longest a kept listing is reused, in seconds, even when the store's
#: version says nothing changed: a change that bypasses the version (a key
#: edited by hand in Redis) shows within this bound.
MAX_AGE_SECONDS = 1.0


class _Listing(NamedTuple):
    cutoff: float
    oldest: float
    text: str
    kept_at: float


class ListingCache:
    """A store's last few listings, each reused while it is still exact.

    A listing for cutoff ``c`` holds the jobs last written at or after ``c``.
    Asked again with a later cutoff ``c2``, it is still the same listing if
    the store has not changed since (same ``version``) and none of its jobs
    was written before ``c2`` — so a poll answered from here is byte for byte
    what the store would have said. Status endpoints are polled far more
    often than jobs change, and the oldest job of a 10-minute window leaves
    it about once a second, so most polls are answered here.

    A version must never repeat for another state of the store (a counter
    that restarts after a reset would): stores build theirs from something a
    reset renews. And a listing is reused for at most ``max_age`` seconds of
    ``clock``, whatever its version says.

    ``size`` listings are kept, for clients polling with different windows.
    Not thread-safe on its own: owners guard it with their lock.
    """

    def __init__(
        self,
        size: int = 4,
        *,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._max_age = max_age
        self._clock = clock
        self._version: Hashable = None
        self._listings: list[_Listing] = []

    @property
    def version(self) -> Hashable:
        """The version of the store the kept listings were read at."""
        return self._version

    def get(self, version: Hashable, cutoff: float) -> str | None:
        """The listing for ``cutoff``, if one is kept and exact at ``version``."""
        if version != self._version:
            self._version = version
            self._listings.clear()
            return None
        fresh_since = self._clock() - self._max_age
        for listing in self._listings:
            exact = listing.cutoff <= cutoff <= listing.oldest
            if exact and listing.kept_at >= fresh_since:
                return listing.text
        return None

    def put(
        self, version: Hashable, cutoff: float, oldest: float | None, text: str
    ) -> None:
        """Remember ``text``, the listing for ``cutoff`` at ``version``.

        ``oldest`` is the earliest "last written" time among its jobs, None
        when it lists none (then it stays exact for every later cutoff).
        """
        if version != self._version:
            self._version = version
            self._listings.clear()
        self._listings.append(
            _Listing(
                cutoff, math.inf if oldest is None else oldest, text, self._clock()
            )
        )
        del self._listings[: -self._size]
