"""Pages of ``GET /v1/jobs``, kept while they are still exact."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import NamedTuple

from .listing import MAX_AGE_SECONDS
from .rows import Mark


class PageKey(NamedTuple):
    """What a page answer depends on besides the store and the time window:
    the query as parsed (``since_seconds`` stands for its filter; the cutoff
    is checked apart)."""

    statuses: frozenset[str] | None
    since: float | None
    after: int
    limit: int
    counts: bool
    records: bool


class _Kept(NamedTuple):
    cutoff: float
    oldest: float
    text: str
    taken: float


class Pages:
    """The last few page answers, as JSON text, each reused while exact.

    A page is a function of the store's data and the query; the store's mark
    names its data (same epoch, same head: no change since), so an answer
    kept under the current mark is byte for byte what reading the store
    again would give. With ``since_seconds``, a page read for cutoff ``c``
    (its rows and the one past them that says ``has_more``) is the same for
    a later cutoff ``c2`` while none of those rows was written before ``c2``
    (``oldest``): rows skipped for being older stay skipped. Counts over a
    window are not kept (a job leaving the window changes them).

    As with the kept Toolkit listings, an answer is trusted for at most
    ``MAX_AGE_SECONDS``: a change that bypassed the store shows within it.
    Clients polling the first page are answered from here while nothing
    changes.
    """

    def __init__(self, *, timer: Callable[[], float], size: int = 8) -> None:
        self._timer = timer
        self._size = size
        self._lock = threading.Lock()
        self._mark: Mark | None = None
        self._kept: dict[PageKey, _Kept] = {}

    def get(self, key: PageKey, mark: Mark, cutoff: float | None) -> str | None:
        """The answer kept for ``key`` that is still exact, or None."""
        now = self._timer()
        with self._lock:
            if mark != self._mark:
                return None
            kept = self._kept.get(key)
        if kept is None or now - kept.taken > MAX_AGE_SECONDS:
            return None
        if cutoff is None or kept.cutoff <= cutoff <= kept.oldest:
            return kept.text
        return None

    def keep(
        self,
        key: PageKey,
        mark: Mark,
        cutoff: float | None,
        oldest: float | None,
        text: str,
    ) -> None:
        """Keep ``text``, read under ``mark`` (taken before the rows were
        read) for ``cutoff``; ``oldest`` is the earliest "last written" of
        the rows read (None: none)."""
        if key.counts and cutoff is not None:
            return
        now = self._timer()
        entry = _Kept(
            -math.inf if cutoff is None else cutoff,
            math.inf if oldest is None else oldest,
            text,
            now,
        )
        with self._lock:
            if mark != self._mark:
                self._mark = mark
                self._kept.clear()
            self._kept.pop(key, None)
            self._kept[key] = entry
            while len(self._kept) > self._size:
                del self._kept[next(iter(self._kept))]
