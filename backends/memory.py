"""``memory://``: a thread-safe store inside the process, for tests and demos."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobstatus_core import (
    Inline,
    Mark,
    ProcessLocal,
    Query,
    Row,
    Stale,
    Tombstone,
    VersionedStoreBase,
    Window,
    checked_at,
    checked_job_id,
    jsontext,
)

from . import storedjson
from .ageindex import AgeIndex
from .changelog import ChangeLog
from .graveyard import Graveyard
from .subscribers import Subscribers
from .timeindex import TimeIndex
from .urloptions import parse_store_url

#: Rows expired per hold of the store's lock.
EXPIRE_CHUNK = 250


class MemoryStore(VersionedStoreBase, Inline, ProcessLocal):
    #: A dict and a lock: a forked child has its own copy.
    survives_fork = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Records are kept as JSON text: a read returns a fresh copy, a
        # record that is not JSON is refused at put time, as elsewhere, and
        # job/status answers with the text as it is (``RecordTexts``).
        self._records: dict[str, str] = {}
        self._index = TimeIndex()
        self._log = ChangeLog()
        # One life of this store's data: a new store never repeats a mark.
        self._epoch = uuid.uuid4().hex[:12]
        self._subscribers = Subscribers()
        # Retention: live jobs by status ordered by age, and the tombstones.
        self._ages = AgeIndex()
        self._graves = Graveyard()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://``: nothing after it."""
        parsed = parse_store_url(url)
        if parsed.netloc or parsed.path:
            raise parsed.fail("memory:// takes no host and no path")
        return cls()

    def read(self, job_id: str) -> Row | None:
        with self._lock:
            return self._with_record(self._log.get(job_id))

    def read_text(self, job_id: str) -> tuple[Row, str] | None:
        with self._lock:
            row = self._log.get(job_id)
            return None if row is None else (row, self._records[job_id])

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        with self._lock:
            rows = {}
            for job_id in job_ids:
                row = self._with_record(self._log.get(job_id))
                if row is not None:
                    rows[job_id] = row
            return rows

    def window(self, cutoff: float) -> Window:
        with self._lock:
            return self._index.window(cutoff)

    def page(self, query: Query) -> list[Row]:
        with self._lock:
            rows = self._log.page(query)
            if not query.records:
                return rows
            return [row for row in map(self._with_record, rows) if row is not None]

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        with self._lock:
            if cutoff is None:
                return self._log.counts(statuses, None)
            return self._log.counts_of(self._index.ids_since(cutoff), statuses, cutoff)

    def mark(self) -> Mark:
        with self._lock:
            return Mark(self._epoch, self._log.head)

    def jobs(self) -> list[tuple[str, float]]:
        with self._lock:
            return self._index.times()

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        at = checked_at(at)
        text = storedjson.kept_text(record)
        with self._lock:
            self._write(job_id, record, text, at)
        self._subscribers.notify()

    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        job_id = checked_job_id(record)
        at = checked_at(at)
        text = storedjson.kept_text(record)
        with self._lock:
            current = self._log.get(job_id)
            if (None if current is None else current.version) != expected:
                return None
            version = self._write(job_id, record, text, at)
        self._subscribers.notify()
        return version

    def stale(self, query: Stale) -> list[Row]:
        with self._lock:
            found = []
            for job_id in self._ages.oldest(query):
                row = self._log.get(job_id)
                assert row is not None
                found.append(row)
            return found

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        at = float(at)
        left = []
        # The lock is taken per chunk: requests are answered on the event
        # loop with this lock, and serve's purger runs beside them.
        for start in range(0, len(rows), EXPIRE_CHUNK):
            with self._lock:
                removed = []
                for row in rows[start : start + EXPIRE_CHUNK]:
                    current = self._log.get(row.job_id)
                    if current is None or current.version != row.version:
                        continue
                    if current.status is None:
                        continue  # never stale: nothing to say it was
                    self._remove(row.job_id)
                    removed.append(row.job_id)
                    tomb = Tombstone(
                        row.job_id, current.status, at, self._log.next_position()
                    )
                    self._graves.add(tomb)
                    left.append(tomb)
                self._index.discard_many(removed)
        if left:
            self._subscribers.notify()
        return left

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        with self._lock:
            return self._graves.of(job_ids)

    def buried(self, query: Query) -> list[Tombstone]:
        with self._lock:
            return self._graves.page(query)

    def forget(self, *, before: float, limit: int) -> int:
        with self._lock:
            return self._graves.forget(before, limit)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def close(self) -> None:
        pass

    def _write(
        self, job_id: str, record: Mapping[str, Any], text: str, at: float | None
    ) -> str:
        """Write under the lock; returns the version written."""
        stamp = time.time() if at is None else at
        position = self._log.next_position()
        status = record["job_status"]
        self._records[job_id] = text
        self._index.set(job_id, stamp, status)
        previous = self._log.get(job_id)
        if previous is not None:
            self._ages.discard(previous)
        row = Row(
            job_id,
            jsontext.encode(status),
            stamp,
            f"{self._epoch}-{position:x}",
            position,
        )
        self._log.set(row)
        self._ages.add(row)
        # Written again: alive again, its tombstone gone.
        self._graves.drop(job_id)
        return row.version

    def _remove(self, job_id: str) -> None:
        """Drop the job but from the time index, which the caller drops a
        chunk at a time (``TimeIndex.discard_many``)."""
        row = self._log.discard(job_id)
        if row is not None:
            self._ages.discard(row)
        self._records.pop(job_id, None)

    def _with_record(self, row: Row | None) -> Row | None:
        if row is None:
            return None
        record = json.loads(self._records[row.job_id])
        return Row(
            row.job_id, row.status, row.updated_at, row.version, row.position, record
        )
