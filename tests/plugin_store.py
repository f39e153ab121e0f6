"""A third-party store, written only against the public protocol.

It keeps jobs in a ``dbm`` file and knows nothing of jobstatus' own stores:
it exists to prove that a store registered by URL scheme passes the same
conformance and HTTP suites as the built-in ones (see docs/writing-a-store.md).
"""

from __future__ import annotations

import dbm.dumb
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from jobstatus_core import Record, checked_job_id


class DbmStore:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = dbm.dumb.open(path, "c")  # noqa: SIM115 - open for the store's life

    @classmethod
    def from_url(cls, url: str) -> DbmStore:
        return cls(urlsplit(url).path)

    def _entries(self) -> Iterator[tuple[str, float, Record]]:
        for key in self._db:
            entry = json.loads(self._db[key])
            yield key.decode(), entry["at"], entry["record"]

    def get(self, job_id: str) -> Record | None:
        with self._lock:
            raw = self._db.get(job_id.encode())
        return None if raw is None else json.loads(raw)["record"]  # type: ignore[no-any-return]

    def changed_since(self, cutoff: float) -> list[tuple[str, Any]]:
        with self._lock:
            return [
                (job_id, record["job_status"])
                for job_id, at, record in self._entries()
                if at >= cutoff and "job_status" in record
            ]

    def jobs(self) -> list[tuple[str, float]]:
        with self._lock:
            return [(job_id, at) for job_id, at, _ in self._entries()]

    def exists(self) -> bool:
        return True

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        entry = {"at": time.time() if at is None else at, "record": record}
        data = json.dumps(entry, allow_nan=False)
        with self._lock:
            self._db[job_id.encode()] = data

    def close(self) -> None:
        with self._lock:
            self._db.close()
