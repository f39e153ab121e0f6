"""The file store's tombstones: one SQLite file beside ``jobs/``.

``<root>/.jobstatus/tombstones.sqlite3``, shared by every process serving the
directory (WAL: readers never wait on the purger). A tombstone's position is
the table's ``INTEGER PRIMARY KEY``, so positions are unique, kept in order
for free, and handed out in one transaction against every other process.
About 84 bytes a tombstone (docs/stores.md); a file per tombstone takes
a 4 KiB block and an inode each. Thread-safe: one connection, one lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from jobstatus_core import ConfigError, StoreError, Tombstone
from jobstatus_core.errors import one_line_reason
from jobstatus_core.rows import Query

SCHEMA = """
CREATE TABLE IF NOT EXISTS tombstones (
    position INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    expired_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstones_expired_at ON tombstones (expired_at);
"""
COLUMNS = "job_id, status, expired_at, position"
#: SQLite's limit on parameters per statement is 32,766 since 3.32; stay well below.
CHUNK = 500


class TombstoneFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            # Guarded by self._lock: one connection serves every thread.
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"file store: the tombstone file {path!r}: {one_line_reason(exc)}"
            ) from None

    def head(self) -> int:
        """The latest tombstone's position (0: none)."""
        with self._lock, _failing("could not read tombstones"):
            head = self._db.execute("SELECT max(position) FROM tombstones")
            return int(head.fetchone()[0] or 0)

    def bury(
        self, graves: Sequence[tuple[str, str, int]], *, at: float, after: int
    ) -> list[Tombstone]:
        """Leave a tombstone for each ``(job_id, status, at_least)``, at the next
        positions past ``after`` and every other tombstone (each no smaller
        than its ``at_least``), in one transaction."""
        if not graves:
            return []
        left: list[Tombstone] = []
        with self._lock, _failing("could not leave tombstones"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT max(position) FROM tombstones")
                last = max(row.fetchone()[0] or 0, after)
                for job_id, status, at_least in graves:
                    last = max(last + 1, at_least)
                    self._db.execute(
                        "INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?, ?)",
                        (last, job_id, status, at),
                    )
                    left.append(Tombstone(job_id, status, at, last))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return left

    def drop(self, job_ids: Sequence[str]) -> None:
        """Drop the tombstones of ``job_ids`` (alive again)."""
        for start in range(0, len(job_ids), CHUNK):
            chunk = job_ids[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            with self._lock, _failing("could not drop tombstones"):
                self._db.execute(
                    f"DELETE FROM tombstones WHERE job_id IN ({marks})", chunk
                )

    def drop_exactly(self, tombs: Sequence[Tombstone]) -> None:
        """Drop these tombstones, not ones left for their jobs since."""
        with self._lock, _failing("could not drop tombstones"):
            self._db.executemany(
                "DELETE FROM tombstones WHERE job_id = ? AND position = ?",
                [(tomb.job_id, tomb.position) for tomb in tombs],
            )

    def of(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        found: dict[str, Tombstone] = {}
        for start in range(0, len(job_ids), CHUNK):
            chunk = job_ids[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            for tomb in self._all(
                f"SELECT {COLUMNS} FROM tombstones WHERE job_id IN ({marks})", chunk
            ):
                found[tomb.job_id] = tomb
        return found

    def after(self, query: Query) -> list[Tombstone]:
        """Tombstones after ``query.after``, of its statuses, in change order."""
        if query.statuses is not None and not query.statuses:
            return []
        sql = f"SELECT {COLUMNS} FROM tombstones WHERE position > ?"
        params: list[object] = [query.after]
        if query.statuses is not None:
            statuses = sorted(query.statuses)
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            params.extend(statuses)
        sql += " ORDER BY position LIMIT ?"
        params.append(query.limit)
        return self._all(sql, params)

    def forget(self, *, before: float, limit: int) -> int:
        with self._lock, _failing("could not drop tombstones"):
            cursor = self._db.execute(
                "DELETE FROM tombstones WHERE position IN (SELECT position FROM"
                " tombstones WHERE expired_at < ? ORDER BY expired_at LIMIT ?)",
                (before, limit),
            )
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, params: Sequence[object]) -> list[Tombstone]:
        with self._lock, _failing("could not read tombstones"):
            rows = self._db.execute(sql, params).fetchall()
        return [Tombstone(*row) for row in rows]


@contextlib.contextmanager
def _failing(what: str) -> Iterator[None]:
    """SQLite's errors as the store's, one line each."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"{what}: {one_line_reason(exc)}") from exc
