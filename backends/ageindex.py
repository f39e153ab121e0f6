"""Live jobs by status, each ordered by (last written, job_id): what
retention's ``stale`` reads without scanning every job.

A purge asks for the oldest jobs of some statuses before a time; each
status's list is sorted, so that costs O(log n + rows) per status. Most
writes are "now" and land at the end of their list. Not thread-safe on its
own: owners guard it with their lock.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, insort
from collections.abc import Iterator

from jobstatus_core import Row, Stale


class AgeIndex:
    __slots__ = ("_by_status",)

    def __init__(self) -> None:
        self._by_status: dict[str, list[tuple[float, str]]] = {}

    def add(self, row: Row) -> None:
        if row.status is not None:
            insort(
                self._by_status.setdefault(row.status, []), (row.updated_at, row.job_id)
            )

    def discard(self, row: Row) -> None:
        if row.status is None:
            return
        entries = self._by_status.get(row.status)
        if not entries:
            return
        entry = (row.updated_at, row.job_id)
        i = bisect_left(entries, entry)
        if i < len(entries) and entries[i] == entry:
            del entries[i]
            if not entries:
                del self._by_status[row.status]

    def clear(self) -> None:
        self._by_status.clear()

    def oldest(self, query: Stale) -> list[str]:
        """Job ids of ``query``, oldest first (ties by job id)."""
        if query.statuses is None:
            lists = [
                entries
                for status, entries in self._by_status.items()
                if status not in query.other_than
            ]
        else:
            lists = [self._by_status[s] for s in query.statuses if s in self._by_status]
        merged = heapq.merge(*(_before(entries, query.before) for entries in lists))
        return [job_id for _, job_id in itertools.islice(merged, query.limit)]


def _before(
    entries: list[tuple[float, str]], before: float
) -> Iterator[tuple[float, str]]:
    # Indexing, not slicing: the first page of a million entries must not
    # copy them all.
    for i in range(len(entries)):
        entry = entries[i]
        if entry[0] >= before:
            return
        yield entry
