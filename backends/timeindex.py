"""An in-memory index of job_id -> (last written, status), ordered by time.

``since(cutoff)`` costs O(log n + matches). Most writes are "now", which land
at the end of the ordered list, so keeping it sorted is cheap in practice.
Each status is kept as its JSON member text (``"job_id":"done"``), so a
listing's answer is joined, not encoded. Not thread-safe on its own: owners
guard it with their lock.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Any

from jobstatus_core import jsontext

_ABSENT = object()


class TimeIndex:
    __slots__ = ("_entries", "_order")

    def __init__(self) -> None:
        # job_id -> (last written, member text); the text is None for records
        # without a job_status field, which listings leave out.
        self._entries: dict[str, tuple[float, str | None]] = {}
        self._order: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def set(self, job_id: str, at: float, status: Any = _ABSENT) -> None:
        text = None if status is _ABSENT else jsontext.member(job_id, status)
        old = self._entries.get(job_id)
        if old is not None:
            if old[0] == at:
                self._entries[job_id] = (at, text)
                return
            self._remove_order(old[0], job_id)
        self._entries[job_id] = (at, text)
        insort(self._order, (at, job_id))

    def discard(self, job_id: str) -> None:
        old = self._entries.pop(job_id, None)
        if old is not None:
            self._remove_order(old[0], job_id)

    def last_written(self, job_id: str) -> float | None:
        entry = self._entries.get(job_id)
        return None if entry is None else entry[0]

    def members_since(self, cutoff: float) -> list[str]:
        """The member texts of jobs last written at or after ``cutoff``."""
        entries = self._entries
        start = bisect_left(self._order, (cutoff, ""))
        texts = [entries[job_id][1] for _, job_id in self._order[start:]]
        return [text for text in texts if text is not None]

    def since(self, cutoff: float) -> Iterator[tuple[str, Any]]:
        entries = self._entries
        start = bisect_left(self._order, (cutoff, ""))
        for _, job_id in self._order[start:]:
            text = entries[job_id][1]
            if text is not None:
                yield job_id, jsontext.status_of(job_id, text)

    def job_ids(self) -> list[str]:
        return list(self._entries)

    def times(self) -> list[tuple[str, float]]:
        return [(job_id, entry[0]) for job_id, entry in self._entries.items()]

    def clear(self) -> None:
        self._entries.clear()
        self._order.clear()

    def _remove_order(self, at: float, job_id: str) -> None:
        order = self._order
        i = bisect_left(order, (at, job_id))
        if i < len(order) and order[i] == (at, job_id):
            del order[i]
