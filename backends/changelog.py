"""An in-memory change order: each job's row, pages by position, kept counts.

Used by the stores that keep their index in the process (``memory://`` and
the file index). Positions only grow; a job's new change appends it again and
its old place goes stale (skipped, and compacted away now and then), so a
write costs O(1) and a page O(log n + rows it walks).
Not thread-safe on its own: owners guard it with their lock.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator

from jobstatus_core import Row
from jobstatus_core.rows import Query


class ChangeLog:
    __slots__ = ("_by_status", "_counts", "_order", "_rows", "head")

    def __init__(self) -> None:
        self.head = 0
        self._rows: dict[str, Row] = {}
        # (position, job_id) in change order, with stale entries among them.
        self._order = _Entries()
        self._by_status: dict[str, _Entries] = {}
        # Kept, so that counts over the whole store are not a scan.
        self._counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._rows)

    def next_position(self, at_least: int = 0) -> int:
        """Take the next position (no smaller than ``at_least``)."""
        self.head = max(self.head + 1, at_least)
        return self.head

    def set(self, row: Row) -> None:
        """Record ``row``, whose position must be above every earlier one."""
        self.discard(row.job_id)
        self._rows[row.job_id] = row
        self._order.append(row.position, row.job_id)
        if row.status is not None:
            self._status_entries(row.status).append(row.position, row.job_id)
            self._counts[row.status] += 1
        if len(self._order) > 2 * len(self._rows) + 1024:
            self._compact()

    def set_many(self, rows: list[Row]) -> None:
        """``set`` of each row (distinct jobs, positions growing, all above
        every earlier one), in one pass: a start takes in a million."""
        for row in rows:
            self.discard(row.job_id)
        for row in rows:
            self._rows[row.job_id] = row
            self._order.append(row.position, row.job_id)
            if row.status is not None:
                self._status_entries(row.status).append(row.position, row.job_id)
        self._counts.update(row.status for row in rows if row.status is not None)
        if len(self._order) > 2 * len(self._rows) + 1024:
            self._compact()

    def _status_entries(self, status: str) -> _Entries:
        entries = self._by_status.get(status)
        if entries is None:
            entries = self._by_status[status] = _Entries()
        return entries

    def discard(self, job_id: str) -> Row | None:
        row = self._rows.pop(job_id, None)
        if row is not None and row.status is not None:
            self._counts[row.status] -= 1
            if not self._counts[row.status]:
                del self._counts[row.status]
        return row

    def get(self, job_id: str) -> Row | None:
        return self._rows.get(job_id)

    def rows(self) -> Iterable[Row]:
        return self._rows.values()

    def page(self, query: Query) -> list[Row]:
        """Rows of ``query`` without records; owners add them."""
        found: list[Row] = []
        for position, job_id in self._entries_after(query.statuses, query.after):
            row = self._rows.get(job_id)
            if row is None or row.position != position or row.status is None:
                continue  # stale: the job changed again since
            if query.cutoff is not None and row.updated_at < query.cutoff:
                continue
            found.append(row)
            if len(found) >= query.limit:
                break
        return found

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        """Kept counts over the whole store, when there is no ``cutoff``."""
        if cutoff is None:
            return {
                status: n
                for status, n in self._counts.items()
                if statuses is None or status in statuses
            }
        return self.counts_of(self._rows, statuses, cutoff)

    def counts_of(
        self, job_ids: Iterable[str], statuses: frozenset[str] | None, cutoff: float
    ) -> dict[str, int]:
        """Counts over ``job_ids`` (those of a time window, say)."""
        counts: Counter[str] = Counter()
        for job_id in job_ids:
            row = self._rows.get(job_id)
            if (
                row is not None
                and row.status is not None
                and row.updated_at >= cutoff
                and (statuses is None or row.status in statuses)
            ):
                counts[row.status] += 1
        return dict(counts)

    def clear(self) -> None:
        self._rows.clear()
        self._order = _Entries()
        self._by_status.clear()
        self._counts.clear()

    def _entries_after(
        self, statuses: frozenset[str] | None, after: int
    ) -> Iterator[tuple[int, str]]:
        if statuses is None:
            lists = [self._order]
        else:
            lists = [self._by_status[s] for s in statuses if s in self._by_status]
        tails = [entries.after(after) for entries in lists]
        if len(tails) == 1:
            return tails[0]
        return heapq.merge(*tails)

    def _compact(self) -> None:
        live = sorted((row.position, row.job_id) for row in self._rows.values())
        self._order = _Entries()
        self._by_status = {}
        for position, job_id in live:
            self._order.append(position, job_id)
            status = self._rows[job_id].status
            if status is not None:
                self._status_entries(status).append(position, job_id)


class _Entries:
    """``(position, job_id)`` in position order, as two columns: positions
    in an array of int64, not a tuple per entry (80 bytes a job)."""

    __slots__ = ("ids", "positions")

    def __init__(self) -> None:
        self.positions = array("q")
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, position: int, job_id: str) -> None:
        self.positions.append(position)
        self.ids.append(job_id)

    def after(self, position: int) -> Iterator[tuple[int, str]]:
        # Indexing, not slicing: a page from the start of a million entries
        # must not copy them all first.
        positions, ids = self.positions, self.ids
        for i in range(bisect_left(positions, position + 1), len(ids)):
            yield positions[i], ids[i]
