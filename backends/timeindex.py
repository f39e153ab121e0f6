"""An in-memory index of job_id -> (last written, status), ordered by time.

``window(cutoff)`` costs O(log n + matches). Most writes are "now", which land
at the end of the ordered list, so keeping it sorted is cheap in practice.
Each status is kept as its JSON member text (``"job_id":"done"``), so a
listing's answer is joined, not encoded (the core keeps listings:
``jobstatus_core.listing``). Not thread-safe on its own: owners guard it with
their lock.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

from jobstatus_core import jsontext
from jobstatus_core.rows import Window

_ABSENT = object()


class TimeIndex:
    __slots__ = ("_ats", "_ids", "_texts", "_times")

    def __init__(self) -> None:
        self._times: dict[str, float] = {}
        # Sorted (last written, job_id), and beside it, index for index, each
        # job's member text: None for records without a job_status field,
        # which listings leave out. A listing slices the text list and joins
        # it without touching anything else: a lookup per match, scattered
        # over 100,000 entries, was most of its cost.
        # The order is kept as parallel columns, times in an array of
        # doubles: a (time, job_id) tuple each cost 80 bytes a job.
        self._ats = array("d")
        self._ids: list[str] = []
        self._texts: list[str | None] = []

    def __len__(self) -> int:
        return len(self._times)

    def set(self, job_id: str, at: float, status: Any = _ABSENT) -> None:
        self.set_text(
            job_id, at, None if status is _ABSENT else jsontext.encode(status)
        )

    def set_text(self, job_id: str, at: float, text: str | None) -> None:
        """``set``, the status given as its JSON text (None: no status)."""
        member = None if text is None else jsontext.member_of_text(job_id, text)
        self.discard(job_id)
        self._times[job_id] = at
        i = self._place_of(at, job_id)
        self._ats.insert(i, at)
        self._ids.insert(i, job_id)
        self._texts.insert(i, member)

    def set_many(self, items: list[tuple[str, float, str | None]]) -> None:
        """``set_text`` of each ``(job_id, at, text)`` (distinct job ids),
        sorted once: an insertion each would move the list each time."""
        for job_id, _, _ in items:
            self.discard(job_id)
        for job_id, at, _ in items:
            self._times[job_id] = at
        keys = [*zip(self._ats, self._ids, strict=True)]
        keys += [(at, job_id) for job_id, at, _ in items]
        members = self._texts + [
            None if text is None else jsontext.member_of_text(job_id, text)
            for job_id, _, text in items
        ]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self._ats = array("d", [keys[i][0] for i in order])
        self._ids = [keys[i][1] for i in order]
        self._texts = [members[i] for i in order]

    def discard(self, job_id: str) -> None:
        at = self._times.pop(job_id, None)
        if at is not None:
            i = self._place_of(at, job_id)
            del self._ats[i]
            del self._ids[i]
            del self._texts[i]

    def discard_many(self, job_ids: Iterable[str]) -> None:
        """``discard`` of each: the columns are copied once, around the
        places removed, instead of moved once per job (a purge removes
        thousands, from the oldest end)."""
        places = sorted(
            self._place_of(at, job_id)
            for job_id in job_ids
            if (at := self._times.pop(job_id, None)) is not None
        )
        if not places:
            return
        ends = [*places, len(self._ids)]
        spans = list(zip([0] + [i + 1 for i in places], ends, strict=True))
        ats = array("d")
        ids: list[str] = []
        texts: list[str | None] = []
        for start, end in spans:
            ats += self._ats[start:end]
            ids += self._ids[start:end]
            texts += self._texts[start:end]
        self._ats, self._ids, self._texts = ats, ids, texts

    def last_written(self, job_id: str) -> float | None:
        return self._times.get(job_id)

    def job_ids(self) -> list[str]:
        return list(self._times)

    def times(self) -> list[tuple[str, float]]:
        return list(self._times.items())

    def clear(self) -> None:
        self._times.clear()
        del self._ats[:]
        self._ids.clear()
        self._texts.clear()

    def window(self, cutoff: float) -> Window:
        """The Toolkit listing of jobs last written at or after ``cutoff``."""
        start = bisect_left(self._ats, cutoff)
        members = [member for member in self._texts[start:] if member is not None]
        # The first entry in the window, listed or not: no listed job is
        # older, so the listing stays exact at least that long.
        oldest = self._ats[start] if start < len(self._ats) else None
        return Window(members, oldest)

    def ids_since(self, cutoff: float) -> Iterator[str]:
        start = bisect_left(self._ats, cutoff)
        for i in range(start, len(self._ids)):
            yield self._ids[i]

    def before(self, cutoff: float) -> Iterator[str]:
        """Job ids last written before ``cutoff``, oldest first (ties by id)."""
        for at, job_id in zip(self._ats, self._ids, strict=True):
            if at >= cutoff:
                return
            yield job_id

    def _place_of(self, at: float, job_id: str) -> int:
        """Where ``(at, job_id)`` is, or goes, in the order (ties by job id)."""
        lo = bisect_left(self._ats, at)
        hi = bisect_right(self._ats, at, lo)
        return bisect_left(self._ids, job_id, lo, hi)
