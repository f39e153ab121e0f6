"""The Toolkit listing of ``jobs/status``, kept while it is still exact."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import NamedTuple

from . import jsontext
from .protocol import Store
from .rows import Mark

#: A kept listing is trusted for at most this long, even with the store's mark
#: unchanged: a change that bypassed the store (a key edited by hand) shows
#: within it.
MAX_AGE_SECONDS = 1.0


class _Kept(NamedTuple):
    cutoff: float
    oldest: float
    text: str
    taken: float


class Listings:
    """A store's last few listings, each reused while it is still exact.

    A listing for cutoff ``c`` holds the jobs last written at or after ``c``.
    Asked again with a later cutoff ``c2``, it is still the same listing if
    the store's mark has not moved (no change since: same epoch, same head)
    and none of its jobs was written before ``c2`` — so a poll answered from
    here is byte for byte what the store would say. Status endpoints are
    polled far more often than jobs change, so most polls are answered here.

    ``size`` listings are kept, for clients polling with different windows.
    """

    def __init__(
        self, store: Store, *, timer: Callable[[], float], size: int = 4
    ) -> None:
        self._store = store
        self._timer = timer
        self._size = size
        self._lock = threading.Lock()
        self._mark: Mark | None = None
        self._kept: list[_Kept] = []

    def json(self, cutoff: float, mark: Mark | None = None) -> str:
        """The listing as the answer's JSON text; ``mark``: the store's,
        when read already, after the request arrived."""
        # The mark is read before the window: a change between the two is
        # newer than the mark, so the next call sees a moved mark and drops
        # the text; the text itself is never older than its mark.
        if mark is None:
            mark = self._store.mark()
        kept = self.kept(mark, cutoff)
        if kept is not None:
            return kept
        now = self._timer()
        window = self._store.window(cutoff)
        text = jsontext.join_members(window.members)
        oldest = math.inf if window.oldest is None else window.oldest
        with self._lock:
            if mark == self._mark:
                self._kept = [k for k in self._kept if now - k.taken <= MAX_AGE_SECONDS]
                self._kept.append(_Kept(cutoff, oldest, text, now))
                del self._kept[: -self._size]
        return text

    def kept(self, mark: Mark, cutoff: float) -> str | None:
        """The listing kept for ``cutoff`` while the store is at ``mark``
        (read after the request arrived), if one is; a mark that moved
        drops them all."""
        now = self._timer()
        with self._lock:
            if mark != self._mark:
                self._mark = mark
                self._kept.clear()
            for kept in self._kept:
                if (
                    kept.cutoff <= cutoff <= kept.oldest
                    and now - kept.taken <= MAX_AGE_SECONDS
                ):
                    return kept.text
        return None
