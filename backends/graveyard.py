"""Tombstones kept in the process (``memory://``): by job id, in change
order for the feed, and by expiry time for ``forget``.

Dropped or replaced tombstones leave stale entries in the two orders; they
are skipped, and compacted away now and then. Not thread-safe on its own:
owners guard it with their lock.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Sequence

from jobstatus_core import Query, Tombstone


class Graveyard:
    __slots__ = ("_by_id", "_by_time", "_order")

    def __init__(self) -> None:
        self._by_id: dict[str, Tombstone] = {}
        # (position, job_id), ascending: tombstones get rising positions.
        self._order: list[tuple[int, str]] = []
        # A heap of (expired_at, position, job_id): the oldest first.
        self._by_time: list[tuple[float, int, str]] = []

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, tomb: Tombstone) -> None:
        self._by_id[tomb.job_id] = tomb
        self._order.append((tomb.position, tomb.job_id))
        heapq.heappush(self._by_time, (tomb.expired_at, tomb.position, tomb.job_id))
        if len(self._order) > 2 * len(self._by_id) + 1024:
            self._compact()

    def drop(self, job_id: str) -> None:
        self._by_id.pop(job_id, None)

    def of(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        return {
            job_id: self._by_id[job_id] for job_id in job_ids if job_id in self._by_id
        }

    def page(self, query: Query) -> list[Tombstone]:
        found: list[Tombstone] = []
        for i in range(bisect_left(self._order, (query.after + 1,)), len(self._order)):
            if len(found) >= query.limit:
                break
            position, job_id = self._order[i]
            tomb = self._by_id.get(job_id)
            if tomb is None or tomb.position != position:
                continue
            if query.statuses is None or tomb.status in query.statuses:
                found.append(tomb)
        return found

    def forget(self, before: float, limit: int) -> int:
        dropped = 0
        while self._by_time and dropped < limit and self._by_time[0][0] < before:
            _, position, job_id = heapq.heappop(self._by_time)
            tomb = self._by_id.get(job_id)
            if tomb is not None and tomb.position == position:
                del self._by_id[job_id]
                dropped += 1
        return dropped

    def clear(self) -> None:
        self._by_id.clear()
        self._order.clear()
        self._by_time.clear()

    def _compact(self) -> None:
        live = sorted(self._by_id.values(), key=lambda tomb: tomb.position)
        self._order = [(tomb.position, tomb.job_id) for tomb in live]
        self._by_time = [(t.expired_at, t.position, t.job_id) for t in live]
        heapq.heapify(self._by_time)
