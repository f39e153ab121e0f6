"""``sqlite:///path/to/jobs.db``: one SQLite file, WAL, via sqlite-utils.

One table, ``jobs``: ``job_id`` primary key, ``job_status`` (JSON text, NULL
when the record has none), ``updated_at`` (epoch seconds, indexed) and
``record`` (the whole record as JSON text). The schema version lives in
``PRAGMA user_version`` and is migrated forward on open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import sqlite_utils

from jobstatus_core import ConfigError, Record, StoreError, checked_job_id, jsontext

from .listingcache import ListingCache
from .urloptions import parse_store_url

# How long a statement waits for another process's lock (SQLite's busy
# timeout), and then how often it is tried again: 5.35 s at most in all.
BUSY_TIMEOUT_SECONDS = 5.0
LOCKED_RETRY_DELAYS = (0.05, 0.1, 0.2)

CHANGED_SINCE_SQL = (
    "SELECT job_id, job_status FROM jobs"
    " WHERE updated_at >= ? AND job_status IS NOT NULL"
)

# The listing's JSON text, joined by SQLite from the covering index: job_status
# is stored as jsontext.encode wrote it, and valid job ids need no escaping,
# so this is jsontext.join_members of the same rows, in the same order.
# The second column, the oldest time listed, tells how long the text stays
# the answer (see ListingCache).
LISTING_JSON_SQL = (
    "SELECT '{' || coalesce(group_concat('\"' || job_id || '\":' || job_status, ','),"
    " '') || '}', min(updated_at) FROM (SELECT job_id, job_status, updated_at"
    " FROM jobs WHERE updated_at >= ? AND job_status IS NOT NULL)"
)

# One statement, so a put is atomic without an explicit transaction. Not
# sqlite-utils' upsert: after a failed first call it can fall back to an
# INSERT OR IGNORE + UPDATE pair that silently drops rows of this NOT NULL
# schema (seen under lock contention).
PUT_SQL = (
    "INSERT INTO jobs (job_id, job_status, updated_at, record) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (job_id) DO UPDATE SET job_status = excluded.job_status,"
    " updated_at = excluded.updated_at, record = excluded.record"
)

T = TypeVar("T")


def path_from_url(url: str) -> Path:
    """``sqlite:///abs/path.db`` (absolute) or ``sqlite:relative.db``."""
    parsed = parse_store_url(url)
    if parsed.netloc:
        raise parsed.fail("use sqlite:///absolute/path.db or sqlite:relative.db")
    raw = unquote(parsed.path)
    if not raw.strip("/"):
        raise parsed.fail("no database file named")
    return Path(raw)


class SQLiteStore:
    def __init__(
        self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS
    ) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"SQLite store: directory {str(self.path.parent)!r} does not exist"
            )
        # One connection shared by the server's threads, guarded by a lock:
        # sqlite3 objects are not safe to use from two threads at once.
        self._lock = threading.Lock()
        self._listings = ListingCache()
        try:
            conn = sqlite3.connect(
                str(self.path),
                timeout=busy_timeout,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise ConfigError(
                f"SQLite store: cannot open {str(self.path)!r}: {exc}"
            ) from None
        self._conn = conn
        self._db = sqlite_utils.Database(conn, execute_plugins=False)
        try:
            self._migrate()
        except ConfigError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise ConfigError(
                f"SQLite store: cannot use {str(self.path)!r}: {exc}"
            ) from None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(path_from_url(url))

    def _migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``, one recorded step at a time."""
        self._conn.execute("PRAGMA journal_mode=WAL")
        # IMMEDIATE: two processes opening a new file at once migrate it once.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"SQLite store: {str(self.path)!r} has schema version "
                    f"{version}, newer than this jobstatus ({SCHEMA_VERSION}); "
                    "upgrade jobstatus"
                )
            for step in MIGRATIONS[version:]:
                step(self._db)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def get(self, job_id: str) -> Record | None:
        row = self._run(
            lambda: self._conn.execute(
                "SELECT record FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        )
        return None if row is None else json.loads(row[0])

    def changed_since(self, cutoff: float) -> Iterator[tuple[str, Any]]:
        rows = self._run(
            lambda: self._conn.execute(CHANGED_SINCE_SQL, (cutoff,)).fetchall()
        )
        for job_id, status in rows:
            yield job_id, json.loads(status)

    def changed_since_json(self, cutoff: float) -> str:
        return self._run(lambda: self._listing_json(cutoff))

    def _listing_json(self, cutoff: float) -> str:
        # data_version moves with every other connection's commit (other
        # processes included), total_changes with this connection's own.
        (data_version,) = self._conn.execute("PRAGMA data_version").fetchone()
        version = (data_version, self._conn.total_changes)
        text = self._listings.get(version, cutoff)
        if text is None:
            text, oldest = self._conn.execute(LISTING_JSON_SQL, (cutoff,)).fetchone()
            self._listings.put(version, cutoff, oldest, text)
        return text

    def jobs(self) -> list[tuple[str, float]]:
        return self._run(
            lambda: self._conn.execute("SELECT job_id, updated_at FROM jobs").fetchall()
        )

    def exists(self) -> bool:
        return True

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        row = (
            job_id,
            # The answers' own encoding: listings join this text as it is.
            # (NaN is refused with the whole record, just below.)
            jsontext.encode(record["job_status"]),
            time.time() if at is None else at,
            json.dumps(record, allow_nan=False),
        )
        self._run(lambda: self._conn.execute(PUT_SQL, row))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _run(self, action: Callable[[], T]) -> T:
        with self._lock:
            for delay in (*LOCKED_RETRY_DELAYS, None):
                try:
                    return action()
                except sqlite3.OperationalError as exc:
                    # SQLite already waited busy_timeout; some lock conflicts
                    # (WAL checkpoints, schema changes) skip that wait.
                    if delay is None or not _is_lock_conflict(exc):
                        raise StoreError(f"SQLite error: {exc}") from exc
                    time.sleep(delay)
                except sqlite3.Error as exc:
                    raise StoreError(f"SQLite error: {exc}") from exc
        raise AssertionError("unreachable")


def _is_lock_conflict(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


def _create_jobs_table(db: sqlite_utils.Database) -> None:
    jobs = db.table("jobs")
    jobs.create(
        {"job_id": str, "job_status": str, "updated_at": float, "record": str},
        pk="job_id",
        not_null={"updated_at", "record"},
        if_not_exists=True,
    )
    jobs.create_index(["updated_at"], index_name="jobs_updated_at", if_not_exists=True)


def _compact_statuses(db: sqlite_utils.Database) -> None:
    # Version 1 stored job_status with json.dumps' default spacing; listings
    # now join the stored text into answers, so it must be their encoding.
    rows = db.execute(
        "SELECT job_id, job_status FROM jobs WHERE job_status IS NOT NULL"
    ).fetchall()
    db.conn.executemany(
        "UPDATE jobs SET job_status = ? WHERE job_id = ?",
        [(jsontext.encode(json.loads(status)), job_id) for job_id, status in rows],
    )


def _covering_listing_index(db: sqlite_utils.Database) -> None:
    # A listing reads job_id and job_status of ~1,000 rows: with them in the
    # index, it never visits the table (0.5 ms instead of 2.6 ms at 100,000
    # jobs), whose rows carry whole records.
    db.execute("DROP INDEX IF EXISTS jobs_updated_at")
    db.table("jobs").create_index(
        ["updated_at", "job_id", "job_status"], index_name="jobs_updated_at"
    )


#: MIGRATIONS[v] takes a database from schema version v to v + 1.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _create_jobs_table,
    _compact_statuses,
    _covering_listing_index,
)
SCHEMA_VERSION = len(MIGRATIONS)
