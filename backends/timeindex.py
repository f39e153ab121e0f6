"""An in-memory index of job_id -> (last written, status), ordered by time.

``since(cutoff)`` costs O(log n + matches). Most writes are "now", which land
at the end of the ordered list, so keeping it sorted is cheap in practice.
Not thread-safe on its own: owners guard it with their lock.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Any

_ABSENT = object()


class TimeIndex:
    __slots__ = ("_entries", "_order")

    def __init__(self) -> None:
        # job_id -> (last written, status); status is _ABSENT for records
        # without a job_status field, which listings leave out.
        self._entries: dict[str, tuple[float, Any]] = {}
        self._order: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def set(self, job_id: str, at: float, status: Any = _ABSENT) -> None:
        old = self._entries.get(job_id)
        if old is not None:
            if old[0] == at:
                self._entries[job_id] = (at, status)
                return
            self._remove_order(old[0], job_id)
        self._entries[job_id] = (at, status)
        insort(self._order, (at, job_id))

    def discard(self, job_id: str) -> None:
        old = self._entries.pop(job_id, None)
        if old is not None:
            self._remove_order(old[0], job_id)

    def last_written(self, job_id: str) -> float | None:
        entry = self._entries.get(job_id)
        return None if entry is None else entry[0]

    def since(self, cutoff: float) -> Iterator[tuple[str, Any]]:
        order = self._order
        entries = self._entries
        for i in range(bisect_left(order, (cutoff, "")), len(order)):
            job_id = order[i][1]
            status = entries[job_id][1]
            if status is not _ABSENT:
                yield job_id, status

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
