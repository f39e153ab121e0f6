"""``memory://``: a thread-safe store inside the process, for tests and demos."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from jobstatus_core import Record, checked_job_id

from .timeindex import TimeIndex
from .urloptions import parse_store_url


class MemoryStore:
    #: Calls never wait on I/O: adapters may run them on the event loop.
    blocking = False
    #: A dict and a lock: a forked child has its own copy.
    survives_fork = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Records are kept as JSON text: a get returns a fresh copy, and a
        # record that is not JSON is refused at put time, as elsewhere.
        self._records: dict[str, str] = {}
        self._index = TimeIndex()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://``: nothing after it."""
        parsed = parse_store_url(url)
        if parsed.netloc or parsed.path:
            raise parsed.fail("memory:// takes no host and no path")
        return cls()

    def get(self, job_id: str) -> Record | None:
        with self._lock:
            text = self._records.get(job_id)
        return None if text is None else json.loads(text)

    def changed_since(self, cutoff: float) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self._index.since(cutoff))

    def changed_since_json(self, cutoff: float) -> str:
        with self._lock:
            return self._index.since_json(cutoff)

    def jobs(self) -> list[tuple[str, float]]:
        with self._lock:
            return self._index.times()

    def exists(self) -> bool:
        return True

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        text = json.dumps(record, allow_nan=False)
        stamp = time.time() if at is None else at
        with self._lock:
            self._records[job_id] = text
            self._index.set(job_id, stamp, record["job_status"])

    def close(self) -> None:
        pass
