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

from jobstatus_core import ConfigError, Record, StoreError, checked_job_id

SCHEMA_VERSION = 1
# How long a writer waits for another process's lock before giving up.
BUSY_TIMEOUT_SECONDS = 5.0

CHANGED_SINCE_SQL = (
    "SELECT job_id, job_status FROM jobs"
    " WHERE updated_at >= ? AND job_status IS NOT NULL"
)

T = TypeVar("T")


def path_from_url(url: str) -> Path:
    """``sqlite:///abs/path.db`` (absolute) or ``sqlite:relative.db``."""
    rest = url.split(":", 1)[1]
    if rest.startswith("///"):
        raw = "/" + rest[3:]
    elif rest.startswith("//"):
        raise ConfigError(
            f"store URL {url!r}: use sqlite:///absolute/path.db or sqlite:relative.db"
        )
    else:
        raw = rest
    raw = unquote(raw.split("?", 1)[0])
    if not raw.strip("/"):
        raise ConfigError(f"store URL {url!r}: no database file named")
    return Path(raw)


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"SQLite store: directory {str(self.path.parent)!r} does not exist"
            )
        # One connection shared by the server's threads, guarded by a lock:
        # sqlite3 objects are not safe to use from two threads at once.
        self._lock = threading.Lock()
        try:
            conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_SECONDS,
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
        except sqlite3.Error as exc:
            conn.close()
            raise ConfigError(
                f"SQLite store: cannot use {str(self.path)!r}: {exc}"
            ) from None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(path_from_url(url))

    def _migrate(self) -> None:
        self._conn.execute("PRAGMA journal_mode=WAL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"SQLite store: {str(self.path)!r} has schema version {version}, "
                f"newer than this jobstatus ({SCHEMA_VERSION}); upgrade jobstatus"
            )
        with self._db.atomic():
            if version < 1:
                self._db.table("jobs").create(
                    {
                        "job_id": str,
                        "job_status": str,
                        "updated_at": float,
                        "record": str,
                    },
                    pk="job_id",
                    not_null={"updated_at", "record"},
                    if_not_exists=True,
                )
                self._db.table("jobs").create_index(
                    ["updated_at"], index_name="jobs_updated_at", if_not_exists=True
                )
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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

    def exists(self) -> bool:
        return True

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        row = {
            "job_id": job_id,
            "job_status": json.dumps(record["job_status"], allow_nan=False),
            "updated_at": time.time() if at is None else at,
            "record": json.dumps(record, allow_nan=False),
        }
        self._run(lambda: self._db.table("jobs").upsert(row, pk="job_id"))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _run(self, action: Callable[[], T]) -> T:
        with self._lock:
            try:
                return action()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite error: {exc}") from exc
