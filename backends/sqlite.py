"""``sqlite:///path/to/jobs.db``: one SQLite file, WAL, via sqlite-utils.

One table, ``jobs``: ``job_id`` primary key, ``job_status`` (JSON text, NULL
when the record has none), ``updated_at`` (epoch seconds, indexed) and
``record`` (the whole record as JSON text). ``PRAGMA application_id`` marks
the file as jobstatus's; the schema version lives in ``PRAGMA user_version``
and is migrated forward on open. A file that is neither empty nor
jobstatus's is refused, never changed; one this process cannot write is
read as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import sqlite_utils

from jobstatus_core import ConfigError, Record, StoreError, checked_job_id, jsontext

from . import storedjson
from .listingcache import ListingCache
from .urloptions import parse_store_url

#: ``PRAGMA application_id`` of the files jobstatus creates ("jbst").
APPLICATION_ID = int.from_bytes(b"jbst", "big")
#: The columns of the ``jobs`` table, by which files of jobstatus versions
#: that set no application_id are recognised.
JOB_COLUMNS = {"job_id", "job_status", "updated_at", "record"}

# How long a statement waits for another process's lock (SQLite's busy
# timeout), and then how often it is tried again: 5.35 s at most in all.
BUSY_TIMEOUT_SECONDS = 5.0
LOCKED_RETRY_DELAYS = (0.05, 0.1, 0.2)

CHANGED_SINCE_SQL = (
    "SELECT job_id, CAST(job_status AS TEXT) FROM jobs"
    " WHERE updated_at >= ? AND job_status IS NOT NULL AND job_id IS NOT NULL"
)

# The listing's JSON text, joined by SQLite from the covering index: job_status
# is stored as jsontext.encode wrote it, and valid job ids quote as they are,
# so this is jsontext.join_members of the same rows, in the same order. Rows
# another program wrote may hold any text: a status that is not JSON is
# quoted as a string (storedjson.status reads it the same way), and
# non-ASCII characters are escaped afterwards (storedjson.ascii_only).
# The second column, the oldest time listed, tells how long the text stays
# the answer (see ListingCache).
LISTING_JSON_SQL = (
    "SELECT '{' || coalesce(group_concat(json_quote(CAST(job_id AS TEXT)) || ':' ||"
    " CASE WHEN json_valid(status) THEN status ELSE json_quote(status) END, ','),"
    " '') || '}', min(updated_at) FROM (SELECT job_id,"
    " CAST(job_status AS TEXT) AS status, updated_at FROM jobs"
    " WHERE updated_at >= ? AND job_status IS NOT NULL AND job_id IS NOT NULL)"
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
        self._busy_timeout = busy_timeout
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"SQLite store: directory {str(self.path.parent)!r} does not exist"
            )
        # One connection shared by the server's threads, guarded by a lock:
        # sqlite3 objects are not safe to use from two threads at once.
        self._lock = threading.Lock()
        self._listings = ListingCache()
        # Which file the connection has open, and how many times one was
        # opened: a file put in the database's place is noticed by the next
        # call, and listings kept from the old file are never taken for the
        # new one's (a fresh connection counts its data_version afresh).
        self._file: tuple[int, int] = (0, 0)
        self._opened = 0
        self._conn = self._open()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(path_from_url(url))

    def _open(self) -> sqlite3.Connection:
        """Connect to the file now at ``path``; raises ``ConfigError``."""
        name = str(self.path)
        writable = _writable(self.path)
        for _ in range(3):
            before = _identity(self.path)
            conn = self._connect(name, writable)
            after = _identity(self.path)
            if after is not None and before in (None, after):
                self._file = after
                self._opened += 1
                return conn
            conn.close()  # replaced while opening: open what is there now
        raise ConfigError(f"SQLite store: {name!r} keeps being replaced")

    def _connect(self, name: str, writable: bool) -> sqlite3.Connection:
        # In a directory it cannot write, SQLite reads a WAL database only if
        # its -shm file is there, or as immutable (then changes its owner
        # makes later are not seen until a restart).
        modes = ("rwc",) if writable else ("ro", "ro&immutable=1")
        for mode in modes:
            try:
                conn = sqlite3.connect(
                    f"file:{quote(name)}?mode={mode}",
                    uri=True,
                    timeout=self._busy_timeout,
                    check_same_thread=False,
                    isolation_level=None,
                )
            except sqlite3.Error as exc:
                raise ConfigError(
                    f"SQLite store: cannot open {name!r}: {exc}"
                ) from None
            # Text another program stored as invalid UTF-8 reads as U+FFFD
            # instead of failing every statement that meets it.
            conn.text_factory = _lenient_text
            try:
                _prepare(conn, name, writable)
            except ConfigError:
                conn.close()
                raise
            except sqlite3.Error as exc:
                conn.close()
                if "unable to open" in str(exc) and mode != modes[-1]:
                    continue
                raise ConfigError(f"SQLite store: cannot use {name!r}: {exc}") from None
            return conn
        raise AssertionError("unreachable")

    def _follow_the_path(self) -> None:
        """Reopen the database if another file now has its name (a restore)."""
        identity = _identity(self.path)
        if identity == self._file:
            return
        if identity is None:
            raise StoreError(
                f"SQLite error: the database file {self.path.name} is gone"
            )
        # The -wal and -shm files beside it are still the old file's: empty
        # them into the old file first, or the new one would be read
        # through the old one's WAL. (SQLite never deletes the WAL of a
        # file that has moved, so another file's WAL is safe from this.)
        with contextlib.suppress(sqlite3.Error):  # the old file's fate is moot
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()
        try:
            self._conn = self._open()
        except ConfigError as exc:
            raise StoreError(str(exc)) from None

    def get(self, job_id: str) -> Record | None:
        row = self._run(
            lambda: self._conn.execute(
                "SELECT record FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        )
        return None if row is None else storedjson.record(job_id, row[0])

    def changed_since(self, cutoff: float) -> Iterator[tuple[str, Any]]:
        rows = self._run(
            lambda: self._conn.execute(CHANGED_SINCE_SQL, (cutoff,)).fetchall()
        )
        for job_id, status in rows:
            yield str(job_id), storedjson.status(status)

    def changed_since_json(self, cutoff: float) -> str:
        return self._run(lambda: self._listing_json(cutoff))

    def _listing_json(self, cutoff: float) -> str:
        # data_version moves with every other connection's commit (other
        # processes included), total_changes with this connection's own.
        (data_version,) = self._conn.execute("PRAGMA data_version").fetchone()
        version = (self._opened, data_version, self._conn.total_changes)
        text = self._listings.get(version, cutoff)
        if text is None:
            text, oldest = self._conn.execute(LISTING_JSON_SQL, (cutoff,)).fetchone()
            text = storedjson.ascii_only(text)
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
            self._follow_the_path()
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


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` names now (device, inode), None if none.

    An inode is not reused while the store keeps its file open, so a
    different pair is a different file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"SQLite error: {exc.strerror}") from None
    return st.st_dev, st.st_ino


def _writable(path: Path) -> bool:
    """Whether this process may write the database (and its WAL beside it)."""
    if not os.access(path.parent, os.W_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _prepare(conn: sqlite3.Connection, name: str, writable: bool) -> None:
    """Check that the file is a jobstatus database (or empty), and bring its
    schema to ``SCHEMA_VERSION``; never alters anyone else's database."""
    version = _schema_version(conn, name)
    if not writable:
        if version == SCHEMA_VERSION:
            return  # read as it is: no WAL switch, no marking
        what = "is empty" if version == 0 else f"has schema version {version}"
        raise ConfigError(
            f"SQLite store: {name!r} {what} and is read-only: jobstatus must "
            f"write it once to bring it to schema version {SCHEMA_VERSION}"
        )
    if version == SCHEMA_VERSION and _application_id(conn) == APPLICATION_ID:
        conn.execute("PRAGMA journal_mode=WAL")
        return
    conn.execute("PRAGMA journal_mode=WAL")
    # IMMEDIATE: two processes opening a new file at once migrate it once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn, name)
        db = sqlite_utils.Database(conn, execute_plugins=False)
        for step in MIGRATIONS[version:]:
            step(db)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _application_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA application_id").fetchone()[0])


def _schema_version(conn: sqlite3.Connection, name: str) -> int:
    """The jobstatus schema version of the file: 0 when it is empty; raises
    ``ConfigError`` for a database of another program or a newer jobstatus."""
    application_id = _application_id(conn)
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if application_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"SQLite store: {name!r} has schema version {version}, newer "
                f"than this jobstatus ({SCHEMA_VERSION}); upgrade jobstatus"
            )
        return version
    if application_id == 0 and version == 0 and objects == 0:
        return 0
    # Files of jobstatus before it set application_id: exactly its table.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    legacy = application_id == 0 and 1 <= version <= SCHEMA_VERSION
    if legacy and columns == JOB_COLUMNS:
        return version
    raise ConfigError(
        f"SQLite store: {name!r} is not a jobstatus database (it belongs to "
        "another program, or is not empty); it was left unchanged"
    )


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
