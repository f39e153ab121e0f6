"""A third-party store, written only against the public protocol.

It keeps jobs in a ``dbm`` file and knows nothing of jobstatus' own stores:
it exists to prove that a store registered by URL scheme passes the same
conformance kit and HTTP suites as the built-in ones (see
docs/writing-a-store.md). It is small rather than fast: every listing, page
and count reads the whole file. ``dbm.dumb`` is not safe to share between
processes, so one process opens a file at a time.
"""

from __future__ import annotations

import dbm.dumb
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from jobstatus_core import (
    Mark,
    Query,
    Row,
    Stale,
    StoreBase,
    Tombstone,
    Window,
    checked_at,
    checked_job_id,
    jsontext,
)

# Job ids never start with a dot, so these keys cannot be a job's.
_EPOCH = b".epoch"
_HEAD = b".head"
# Tombstones live under ".t.<job_id>": dotted, so never listed as jobs.
_TOMB = ".t."


class DbmStore(StoreBase):
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = dbm.dumb.open(path, "c")  # noqa: SIM115 - open for the store's life
        if _EPOCH not in self._db:
            # A new file is a new life of the data: marks and cursors of an
            # earlier file at this path never match it.
            self._db[_EPOCH] = uuid.uuid4().hex[:12]
            self._db[_HEAD] = "0"
        self._epoch = self._db[_EPOCH].decode()

    @classmethod
    def from_url(cls, url: str) -> DbmStore:
        return cls(urlsplit(url).path)

    # -- reading ---------------------------------------------------------------

    def read(self, job_id: str) -> Row | None:
        with self._lock:
            raw = self._db.get(job_id.encode())
        return None if raw is None else self._row(job_id, json.loads(raw), True)

    def window(self, cutoff: float) -> Window:
        rows = sorted(
            (row.updated_at, row.job_id, row.status)
            for row in self._rows()
            if row.status is not None and row.updated_at >= cutoff
        )
        members = [f'"{job_id}":{status}' for _, job_id, status in rows]
        return Window(members, rows[0][0] if rows else None)

    def page(self, query: Query) -> list[Row]:
        found = sorted(
            (row for row in self._rows(query.records) if _matches(row, query)),
            key=lambda row: row.position,
        )
        return found[: query.limit]

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        query = Query(statuses=statuses, cutoff=cutoff)
        found = Counter(row.status for row in self._rows() if _matches(row, query))
        return {status: n for status, n in found.items() if status is not None}

    def mark(self) -> Mark:
        with self._lock:
            return Mark(self._epoch, int(self._db[_HEAD]))

    def jobs(self) -> list[tuple[str, float]]:
        return [(row.job_id, row.updated_at) for row in self._rows()]

    # -- writing ---------------------------------------------------------------

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        at = checked_at(at)
        with self._lock:
            self._write(job_id, record, at)

    def swap(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> bool:
        job_id = checked_job_id(record)
        at = checked_at(at)
        # The lock makes read-compare-write one step for every writer, since
        # only this process writes the file.
        with self._lock:
            raw = self._db.get(job_id.encode())
            current = None if raw is None else self._version(json.loads(raw))
            if current != expected:
                return False
            self._write(job_id, record, at)
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- retention (Expiring): scans, as everything here --------------------

    def stale(self, query: Stale) -> list[Row]:
        found = sorted(
            (
                row
                for row in self._rows()
                if row.status is not None
                and row.updated_at < query.before
                and (
                    row.status in query.statuses
                    if query.statuses is not None
                    else row.status not in query.other_than
                )
            ),
            key=lambda row: (row.updated_at, row.job_id),
        )
        return found[: query.limit]

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        left = []
        with self._lock:
            for row in rows:
                raw = self._db.get(row.job_id.encode())
                if raw is None:
                    continue
                entry = json.loads(raw)
                record = entry["record"]
                if self._version(entry) != row.version or "job_status" not in record:
                    continue
                position = int(self._db[_HEAD]) + 1
                tomb = Tombstone(
                    row.job_id, jsontext.encode(record["job_status"]), at, position
                )
                self._db[(_TOMB + row.job_id).encode()] = json.dumps(
                    [tomb.status, tomb.expired_at, tomb.position]
                )
                del self._db[row.job_id.encode()]
                self._db[_HEAD] = str(position)
                left.append(tomb)
        return left

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        found = {}
        with self._lock:
            for job_id in job_ids:
                raw = self._db.get((_TOMB + job_id).encode())
                if raw is not None:
                    found[job_id] = _tombstone(job_id, raw)
        return found

    def buried(self, query: Query) -> list[Tombstone]:
        found = sorted(
            (
                tomb
                for tomb in self._tombs()
                if tomb.position > query.after
                and (query.statuses is None or tomb.status in query.statuses)
            ),
            key=lambda tomb: tomb.position,
        )
        return found[: query.limit]

    def forget(self, *, before: float, limit: int) -> int:
        old = sorted(
            (tomb for tomb in self._tombs() if tomb.expired_at < before),
            key=lambda tomb: tomb.expired_at,
        )[:limit]
        with self._lock:
            for tomb in old:
                del self._db[(_TOMB + tomb.job_id).encode()]
        return len(old)

    def _tombs(self) -> list[Tombstone]:
        prefix = _TOMB.encode()
        with self._lock:
            return [
                _tombstone(key[len(prefix) :].decode(), self._db[key])
                for key in self._db
                if key.startswith(prefix)
            ]

    # -- the file --------------------------------------------------------------

    def _write(self, job_id: str, record: Mapping[str, Any], at: float | None) -> None:
        position = int(self._db[_HEAD]) + 1
        entry = {
            "at": time.time() if at is None else at,
            "position": position,
            "record": record,
        }
        # Encoded before anything is written: a record that is not JSON
        # (NaN, say) raises ValueError and leaves the store as it was.
        data = json.dumps(entry, allow_nan=False)
        self._db[job_id.encode()] = data
        self._db[_HEAD] = str(position)
        # Written again: alive again, its tombstone gone.
        tomb = (_TOMB + job_id).encode()
        if tomb in self._db:
            del self._db[tomb]

    def _rows(self, records: bool = False) -> Iterator[Row]:
        with self._lock:
            entries = [
                (key.decode(), self._db[key])
                for key in self._db
                if not key.startswith(b".")
            ]
        for job_id, raw in entries:
            yield self._row(job_id, json.loads(raw), records)

    def _row(self, job_id: str, entry: dict[str, Any], records: bool) -> Row:
        record = entry["record"]
        status = (
            jsontext.encode(record["job_status"]) if "job_status" in record else None
        )
        return Row(
            job_id,
            status,
            entry["at"],
            self._version(entry),
            entry["position"],
            record if records else None,
        )

    def _version(self, entry: dict[str, Any]) -> str:
        return f"{self._epoch}-{entry['position']}"


def _tombstone(job_id: str, raw: bytes) -> Tombstone:
    status, expired_at, position = json.loads(raw)
    return Tombstone(job_id, status, expired_at, position)


def _matches(row: Row, query: Query) -> bool:
    return (
        row.status is not None
        and row.position > query.after
        and (query.statuses is None or row.status in query.statuses)
        and (query.cutoff is None or row.updated_at >= query.cutoff)
    )
