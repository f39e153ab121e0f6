"""``sqlite:///path/to/jobs.db``: one SQLite file, WAL, via sqlite-utils.

Table ``jobs``: ``job_id`` primary key, ``job_status`` (JSON text, NULL when
the record has none), ``updated_at`` (epoch seconds, indexed), ``record``
(the whole record as JSON text), ``position`` (the job's last change in the
file's change order) and ``record_digest`` (a digest of ``record`` as this
store wrote it: a text that still matches is sent as it is, see
``read_text``). Triggers give every change, whoever makes it, the
next position (``jobstatus_meta.head``) and keep ``job_counts`` by status;
``jobstatus_meta.epoch`` names this life of the data. ``PRAGMA
application_id`` marks the file as jobstatus's; the schema version lives in
``PRAGMA user_version`` and is migrated forward on open (``sqliteschema``).
A file that is neither empty nor jobstatus's is refused, never changed; one
this process cannot write is read as it is.

Retention (``Expiring``): an expired job's row is deleted (the deletion
trigger gives the expiry the next position) and its tombstone goes to
``job_tombstones``, a table of its own keyed by that position: every query of
``jobs`` stays as it is and never meets a tombstone, and a tombstone holds no
record. The trigger ``jobs_revived`` drops an id's tombstone in the statement
that writes the job again, whoever writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from jobstatus_core import (
    ConfigError,
    Mark,
    Query,
    Row,
    Stale,
    StoreError,
    Tombstone,
    TriesInline,
    VersionedStoreBase,
    Window,
    WouldBlock,
    checked_at,
    checked_job_id,
    jsontext,
    nowait,
)
from jobstatus_core.storebase import parsed_version

from . import storedjson
from .breaker import Breaker
from .keptrecords import DEFAULT_CACHE_BYTES, KeptRecords
from .sqliteschema import is_lock_conflict, prepare
from .turnmemo import TurnMemo, wrote
from .urloptions import parse_store_url

# How long a statement waits for another process's lock (SQLite's busy
# timeout), and then how often it is tried again: 5.35 s at most in all.
BUSY_TIMEOUT_SECONDS = 5.0
LOCKED_RETRY_DELAYS = (0.05, 0.1, 0.2)
#: How many SQLite VM steps an inline statement takes between looks at its
#: budget: a read of one job takes fewer, so its look costs nothing.
PROGRESS_STEPS = 1000
#: How often an inline read looks whether another file now has the
#: database's name (a restore): a ``stat`` cost a tenth of a status poll on
#: the event loop. Reads on threads, and every write, look each time.
INLINE_FILE_CHECK_SECONDS = 1.0

# A stored status as JSON text: the store's own writes are jsontext's, but rows
# another program wrote may hold any text; one that is not JSON is quoted as a
# string (storedjson.status reads it the same way). Non-ASCII characters are
# escaped afterwards (storedjson.ascii_only).
STATUS_JSON = (
    "CASE WHEN json_valid(CAST(job_status AS TEXT)) THEN CAST(job_status AS TEXT)"
    " ELSE json_quote(CAST(job_status AS TEXT)) END"
)

# The Toolkit listing's members, from the covering index jobs_updated_at in
# its own order (updated_at, job_id): the table, whose rows carry whole
# records, is never visited.
WINDOW_SQL = (
    f"SELECT json_quote(CAST(job_id AS TEXT)) || ':' || {STATUS_JSON}, updated_at"
    " FROM jobs WHERE updated_at >= ? AND job_status IS NOT NULL"
    " AND job_id IS NOT NULL ORDER BY updated_at, job_id"
)

# Rows carry their version, made of the file's epoch and the position: read
# in the same statement, so both come from one snapshot.
ROW_COLUMNS = (
    f"CAST(job_id AS TEXT), {STATUS_JSON}, updated_at, position,"
    " (SELECT epoch FROM jobstatus_meta)"
)
READ_SQL = f"SELECT {ROW_COLUMNS}, record FROM jobs WHERE job_id = ?"
READ_TEXT_SQL = (
    f"SELECT {ROW_COLUMNS}, record, record_digest FROM jobs WHERE job_id = ?"
)
READ_MANY_SQL = (
    f"SELECT {ROW_COLUMNS}, record FROM jobs"
    " WHERE job_id IN (SELECT value FROM json_each(?))"
)

# A page walks jobs_position (or jobs_status_position for one status) from the
# position after the cursor, in order, and stops at the limit; updated_at is
# in both indexes, so a window is checked without visiting the table.
PAGE_SQL = (
    "SELECT {columns} FROM jobs WHERE position > ? AND job_status IS NOT NULL"
    " AND job_id IS NOT NULL{where} ORDER BY position LIMIT ?"
)

# Kept by the triggers: a handful of rows, never a scan of the jobs.
KEPT_COUNTS_SQL = (
    f"SELECT {STATUS_JSON}, n FROM (SELECT status AS job_status, n FROM job_counts"
    " WHERE n > 0)"
)
# Named index: left to itself, SQLite walks jobs_status_position whole to
# group without sorting (12.6 ms at 100,000 jobs for a 10-minute window).
WINDOW_COUNTS_SQL = (
    f"SELECT {STATUS_JSON}, count(*) FROM jobs INDEXED BY jobs_updated_at"
    " WHERE updated_at >= ?"
    " AND job_status IS NOT NULL AND job_id IS NOT NULL GROUP BY job_status"
)

MARK_SQL = "SELECT epoch, head FROM jobstatus_meta"

# One statement, so a put is atomic without an explicit transaction; the
# triggers give it its position. Not sqlite-utils' upsert: after a failed
# first call it can fall back to an INSERT OR IGNORE + UPDATE pair that
# silently drops rows of this NOT NULL schema (seen under lock contention).
PUT_SQL = (
    "INSERT INTO jobs (job_id, job_status, updated_at, record, record_digest)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET"
    " job_status = excluded.job_status, updated_at = excluded.updated_at,"
    " record = excluded.record, record_digest = excluded.record_digest"
)
# ``swap``: one conditional statement each, so no other writer (thread or
# process) can come between the check and the write.
CREATE_SQL = (
    "INSERT INTO jobs (job_id, job_status, updated_at, record, record_digest)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING"
)
SWAP_SQL = (
    "UPDATE jobs SET job_status = ?, updated_at = ?, record = ?, record_digest = ?"
    " WHERE job_id = ? AND position = ? AND (SELECT epoch FROM jobstatus_meta) = ?"
)

# Retention. ``stale`` of some statuses walks jobs_status_updated_at once per
# status (merged like a page): an IN list would make SQLite sort every old job
# of those statuses before the limit. Of every status but some, it walks
# jobs_updated_at in its own order, skipping the others in the index.
STALE_STATUS_SQL = (
    f"SELECT {ROW_COLUMNS} FROM jobs INDEXED BY jobs_status_updated_at"
    " WHERE job_status = ? AND updated_at < ? AND job_id IS NOT NULL"
    " ORDER BY updated_at, job_id LIMIT ?"
)
STALE_OTHER_SQL = (
    f"SELECT {ROW_COLUMNS} FROM jobs INDEXED BY jobs_updated_at"
    " WHERE updated_at < ? AND job_status IS NOT NULL AND job_id IS NOT NULL"
    " AND job_status NOT IN (SELECT value FROM json_each(?))"
    " ORDER BY updated_at, job_id LIMIT ?"
)
# Only if the row is still the version purge read; the deletion trigger moves
# the head, and the tombstone takes that position.
EXPIRE_SQL = (
    "DELETE FROM jobs WHERE job_id = ? AND position = ?"
    " AND (SELECT epoch FROM jobstatus_meta) = ? RETURNING 1"
)
BURY_SQL = (
    "INSERT OR REPLACE INTO job_tombstones (position, job_id, status, expired_at)"
    " SELECT head, ?, ?, ? FROM jobstatus_meta RETURNING position"
)
TOMBSTONE_COLUMNS = "job_id, status, expired_at, position"
TOMBSTONES_SQL = (
    f"SELECT {TOMBSTONE_COLUMNS} FROM job_tombstones"
    " WHERE job_id IN (SELECT value FROM json_each(?))"
)
# The feed follows the head, so the tombstones after its cursor are few:
# filtered by status while walking the table's own (position) order.
BURIED_SQL = (
    f"SELECT {TOMBSTONE_COLUMNS} FROM job_tombstones WHERE position > ?{{where}}"
    " ORDER BY position LIMIT ?"
)
FORGET_SQL = (
    "DELETE FROM job_tombstones WHERE position IN (SELECT position FROM"
    " job_tombstones INDEXED BY job_tombstones_expired_at WHERE expired_at < ?"
    " ORDER BY expired_at LIMIT ?)"
)

T = TypeVar("T")
#: What a kept answer is true under: which connection (``_opened``), its
#: ``PRAGMA data_version`` and its ``total_changes``.
Proof = tuple[int, int, int]


def path_from_url(url: str) -> Path:
    """``sqlite:///abs/path.db`` (absolute) or ``sqlite:relative.db``."""
    parsed = parse_store_url(url)
    if parsed.netloc:
        raise parsed.fail("use sqlite:///absolute/path.db or sqlite:relative.db")
    raw = unquote(parsed.path)
    if not raw.strip("/"):
        raise parsed.fail("no database file named")
    return Path(raw)


def require_database(url: str) -> None:
    """Raise ``ConfigError`` unless the URL's database file is there:
    opening one that is not makes it, empty."""
    path = path_from_url(url)
    if not path.exists():
        raise ConfigError(f"SQLite store: {str(path)!r} does not exist")


class SQLiteStore(VersionedStoreBase, TriesInline):
    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        # ``read_text``'s answers (``keptrecords``); None: ``?cache=0``.
        self._kept: KeptRecords[Proof] | None = (
            KeptRecords(cache_bytes) if cache_bytes else None
        )
        # How many connections this store has opened: a new one counts its
        # data_version and total_changes afresh.
        self._opened = 0
        # PRAGMA data_version by connection, for the rest of the loop's turn.
        self._versions: TurnMemo[int, int] = TurnMemo()
        # mark() by (connection, total_changes), for the rest of the turn.
        self._marks: TurnMemo[tuple[int, int], Mark] = TurnMemo()
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"SQLite store: directory {str(self.path.parent)!r} does not exist"
            )
        # One connection shared by the server's threads, guarded by a lock:
        # sqlite3 objects are not safe to use from two threads at once.
        self._lock = threading.Lock()
        # Which file the connection has open: a file put in the database's
        # place is noticed by the next call.
        self._file: tuple[int, int] = (0, 0)
        # When an inline read last found ``_file`` still at the path.
        self._file_seen_at = -math.inf
        self._conn = self._open()
        # Whether the connection's busy timeout is 0, as inline calls set it.
        self._waits_not = False
        # Inline calls (``TriesInline``): one over its budget sends the
        # store's calls to threads for a while.
        self._breaker = Breaker()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:///abs/path.db[?cache=BYTES]`` or ``sqlite:relative.db``."""
        return cls(
            path_from_url(url),
            cache_bytes=parse_store_url(url).options.get("cache", DEFAULT_CACHE_BYTES),
        )

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
                prepare(conn, name, writable, self._busy_timeout)
            except ConfigError:
                conn.close()
                raise
            except sqlite3.Error as exc:
                conn.close()
                # Read-only where a WAL file would be made: "unable to open"
                # before SQLite 3.40, "attempt to write a readonly database"
                # (SQLITE_READONLY_CANTINIT) since.
                if mode != modes[-1] and any(
                    said in str(exc) for said in ("unable to open", "readonly database")
                ):
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
        # Closed: whatever file comes next, the old one put back too, is
        # opened anew, not taken for the one still open; and the loop's
        # reads look at the path before their next statement, not within
        # the second, so none runs on the closed connection.
        self._file = (0, 0)
        self._file_seen_at = -math.inf
        try:
            self._conn = self._open()
        except ConfigError as exc:
            # Answered to clients: the file's name, not where it lives.
            reason = str(exc).replace(repr(str(self.path)), repr(self.path.name))
            raise StoreError(reason) from None
        self._waits_not = False

    def read(self, job_id: str) -> Row | None:
        found = self._run(lambda: self._conn.execute(READ_SQL, (job_id,)).fetchone())
        return None if found is None else _row(found, with_record=True)

    def read_text(self, job_id: str) -> tuple[Row, str] | None:
        """``RecordTexts``: the record as this store wrote it, unparsed, when
        its digest still matches; a row another program wrote or changed
        (no digest, or a stale one) is parsed and encoded, as ``read``.

        Answers are kept (``keptrecords``) with the database's state: which
        connection, ``PRAGMA data_version`` (moved by any other connection's
        commit) and the connection's own ``total_changes``. While none has
        moved, a kept answer is the job's; the pragma costs a third of the
        read it replaces, and is read once per turn of the event loop
        (``turnmemo``).
        """
        kept = self._kept
        wanted = kept is not None and kept.wants(job_id)
        if kept is not None and wanted:
            hit = self._looked_up(lambda: self._kept_this_turn(kept, job_id))
            if hit is not None:
                return hit

        def fetch() -> tuple[tuple[Row, str] | None, Any, Proof | None]:
            """(a kept answer, or the row's values and the proof to keep
            them with)."""
            conn = self._conn
            if kept is None or not wanted:
                return None, conn.execute(READ_TEXT_SQL, (job_id,)).fetchone(), None
            # Read before the row: a commit between the two makes the row
            # newer than the proof says, never older. Once per turn of the
            # event loop (turnmemo): every read the turn makes is of a
            # request that arrived before it.
            version = self._versions.value(self._opened, self._data_version)
            proof = (self._opened, version, conn.total_changes)
            hit = kept.get(job_id, proof)
            if hit is not None:
                return hit, None, None
            return None, conn.execute(READ_TEXT_SQL, (job_id,)).fetchone(), proof

        hit, found, proof = self._run(fetch)
        if hit is not None:
            return hit
        if found is None:
            return None
        if kept is not None and not wanted:
            kept.read_once(job_id)
        row = _row(found, with_record=False)
        text, digest = found[5], found[6]
        # ASCII checked too: a digest another program computed of its own
        # text would otherwise put raw non-ASCII in an ASCII answer.
        if not (
            isinstance(text, str) and text.isascii() and digest == record_digest(text)
        ):
            text = jsontext.encode(storedjson.record(job_id, text))
        if kept is not None and proof is not None:  # wanted
            kept.keep(job_id, proof, row, text)
        return row, text

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        wanted = json.dumps(list(job_ids))
        found = self._run(
            lambda: self._conn.execute(READ_MANY_SQL, (wanted,)).fetchall()
        )
        rows = (_row(values, with_record=True) for values in found)
        return {row.job_id: row for row in rows}

    def window(self, cutoff: float) -> Window:
        found = self._run(lambda: self._conn.execute(WINDOW_SQL, (cutoff,)).fetchall())
        members = [storedjson.ascii_only(member) for member, _ in found]
        return Window(members, found[0][1] if found else None)

    def page(self, query: Query) -> list[Row]:
        columns = ROW_COLUMNS + (", record" if query.records else "")
        where = "" if query.cutoff is None else " AND updated_at >= ?"
        window = () if query.cutoff is None else (query.cutoff,)
        if query.statuses is None:
            sql = PAGE_SQL.format(columns=columns, where=where)
            params: list[tuple[Any, ...]] = [(query.after, *window, query.limit)]
        else:
            # One index walk per status, merged by position: an IN list would
            # make SQLite sort every job of those statuses before the limit.
            sql = PAGE_SQL.format(columns=columns, where=" AND job_status = ?" + where)
            params = [
                (query.after, status, *window, query.limit)
                for status in sorted(query.statuses)
            ]

        def fetch() -> list[list[Any]]:
            return [self._conn.execute(sql, p).fetchall() for p in params]

        walks = self._run(fetch)
        merged = heapq.merge(*walks, key=lambda values: values[3])
        return [
            _row(values, with_record=query.records)
            for values in islice(merged, query.limit)
        ]

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        if cutoff is None:
            found = self._run(lambda: self._conn.execute(KEPT_COUNTS_SQL).fetchall())
        else:
            found = self._run(
                lambda: self._conn.execute(WINDOW_COUNTS_SQL, (cutoff,)).fetchall()
            )
        # Rows another program wrote may spell one status two ways (bare and
        # quoted): they count as the one JSON value both list as.
        counts: Counter[str] = Counter()
        for status, n in found:
            counts[storedjson.ascii_only(status)] += n
        return {
            status: n
            for status, n in counts.items()
            if statuses is None or status in statuses
        }

    def mark(self) -> Mark:
        this_turn = self._looked_up(
            lambda: self._marks.get((self._opened, self._conn.total_changes))
        )
        if this_turn is not None:
            return this_turn

        def fetch() -> Mark:
            # Once per turn of the event loop while this connection has
            # written nothing (turnmemo): a listing polled by many clients
            # asks for the mark on each poll.
            key = (self._opened, self._conn.total_changes)
            return self._marks.value(key, self._read_mark)

        return self._run(fetch)

    def _looked_up(self, look: Callable[[], T | None]) -> T | None:
        """``look()`` on the loop, under the connection's lock if it is free:
        what this turn of the loop has read already (``turnmemo``) needs no
        statement, so none of ``_run_inline``'s guards either."""
        if not nowait.asked() or not self._lock.acquire(blocking=False):
            return None
        try:
            return look()
        except sqlite3.Error:
            return None  # (a closed connection) the statement's path says so
        finally:
            self._lock.release()

    def _kept_this_turn(
        self, kept: KeptRecords[Proof], job_id: str
    ) -> tuple[Row, str] | None:
        version = self._versions.get(self._opened)
        if version is None:
            return None
        return kept.get(job_id, (self._opened, version, self._conn.total_changes))

    def _read_mark(self) -> Mark:
        epoch, head = self._conn.execute(MARK_SQL).fetchone()
        return Mark(str(epoch), int(head))

    def _data_version(self) -> int:
        ((version,),) = self._conn.execute("PRAGMA data_version").fetchall()
        return int(version)

    def jobs(self) -> list[tuple[str, float]]:
        return self._run(
            lambda: self._conn.execute("SELECT job_id, updated_at FROM jobs").fetchall()
        )

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        values = _values(record, at)
        self._write(lambda: self._conn.execute(PUT_SQL, values))

    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        values = _values(record, at)
        params: tuple[Any, ...]
        if expected is None:
            sql, params = CREATE_SQL, values
        else:
            version = parsed_version(expected)
            if version is None:
                return None  # not a version this store gave: it matches no job
            epoch, expected_position = version
            job_id, status, stamp, text, digest = values
            sql = SWAP_SQL
            params = (status, stamp, text, digest, job_id, expected_position, epoch)
        return self._write(lambda: self._swap_in_transaction(sql, params))

    def _swap_in_transaction(self, sql: str, params: Sequence[Any]) -> str | None:
        # The triggers give the row its position after the statement, so the
        # new version is read back in the same transaction: no other writer
        # can come between the write and that read.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if self._conn.execute(sql, params).rowcount != 1:
                self._conn.execute("ROLLBACK")
                return None
            epoch, head = self._conn.execute(MARK_SQL).fetchone()
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        return f"{epoch}-{head:x}"

    # -- retention -------------------------------------------------------------

    def stale(self, query: Stale) -> list[Row]:
        if query.statuses is None:
            excluded = json.dumps(sorted(query.other_than))
            params: list[tuple[Any, ...]] = [(query.before, excluded, query.limit)]
            sql = STALE_OTHER_SQL
        else:
            sql = STALE_STATUS_SQL
            params = [
                (status, query.before, query.limit)
                for status in sorted(query.statuses - query.other_than)
            ]

        def fetch() -> list[list[Any]]:
            return [self._conn.execute(sql, p).fetchall() for p in params]

        walks = self._run(fetch)
        merged = heapq.merge(*walks, key=lambda values: (values[2], values[0]))
        return [
            _row(values, with_record=False) for values in islice(merged, query.limit)
        ]

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        wanted = [
            (row.job_id, row.status, *version)
            for row in rows
            if row.status is not None and (version := parsed_version(row.version))
        ]

        def bury() -> list[Tombstone]:
            # IMMEDIATE: the batch takes the write lock at once, so purgers and
            # writers of every process come one after the other, and a job is
            # deleted only while its version is the one read.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                left = []
                for job_id, status, epoch, position in wanted:
                    gone = self._conn.execute(
                        EXPIRE_SQL, (job_id, position, epoch)
                    ).fetchall()
                    if gone:
                        ((place,),) = self._conn.execute(
                            BURY_SQL, (job_id, status, at)
                        ).fetchall()
                        left.append(Tombstone(job_id, status, at, place))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return left

        return self._write(bury)

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        wanted = json.dumps(list(job_ids))
        found = self._run(
            lambda: self._conn.execute(TOMBSTONES_SQL, (wanted,)).fetchall()
        )
        return {values[0]: _tombstone(values) for values in found}

    def buried(self, query: Query) -> list[Tombstone]:
        if query.statuses is None:
            sql = BURIED_SQL.format(where="")
            params: tuple[Any, ...] = (query.after, query.limit)
        else:
            sql = BURIED_SQL.format(
                where=" AND status IN (SELECT value FROM json_each(?))"
            )
            statuses = json.dumps(sorted(query.statuses))
            params = (query.after, statuses, query.limit)
        found = self._run(lambda: self._conn.execute(sql, params).fetchall())
        return [_tombstone(values) for values in found]

    def forget(self, *, before: float, limit: int) -> int:
        dropped = self._write(
            lambda: self._conn.execute(FORGET_SQL, (before, limit)).rowcount
        )
        return max(0, dropped)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, action: Callable[[], T]) -> T:
        try:
            return self._run(action)
        finally:
            wrote()  # the loop's kept proofs (turnmemo) end here

    def _run(self, action: Callable[[], T]) -> T:
        if nowait.asked():
            return self._run_inline(action)
        with self._lock:
            if self._waits_not:
                # First: a replaced file's checkpoint below must wait for
                # the old file's readers too.
                self._restore_busy_timeout()
            self._follow_the_path()
            for delay in (*LOCKED_RETRY_DELAYS, None):
                tried = time.monotonic()
                try:
                    return action()
                except sqlite3.OperationalError as exc:
                    # Some lock conflicts (WAL checkpoints, schema changes)
                    # skip SQLite's busy wait: those are tried again. One
                    # that waited busy_timeout out is a lock still held, and
                    # another try would wait it all again.
                    busy = self._busy_timeout
                    waited = busy > 0 and time.monotonic() - tried >= busy
                    if delay is None or waited or not is_lock_conflict(exc):
                        raise StoreError(f"SQLite error: {exc}") from exc
                    time.sleep(delay)
                except sqlite3.Error as exc:
                    raise StoreError(f"SQLite error: {exc}") from exc
        raise AssertionError("unreachable")

    def _restore_busy_timeout(self) -> None:
        """The busy timeout of calls on threads, after inline calls' 0."""
        busy_ms = int(self._busy_timeout * 1000)
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite error: {exc}") from exc
        self._waits_not = False

    def _run_inline(self, action: Callable[[], T]) -> T:
        """``action`` on the event loop, or ``WouldBlock``: while a thread
        holds the connection, while another process holds a lock (no busy
        wait), and once it runs past the breaker's budget (interrupted). A
        call slowed where no step is taken (a page read from a slow disk)
        ends late: the breaker then sends the next calls to threads."""
        if not self._lock.acquire(blocking=False):
            raise WouldBlock("the SQLite connection is in use")
        try:
            with self._breaker.timed():
                now = time.monotonic()
                if now - self._file_seen_at >= INLINE_FILE_CHECK_SECONDS:
                    if _identity(self.path) != self._file:
                        # Reopening (a restored file) migrates: on a thread.
                        raise WouldBlock("the SQLite file was replaced")
                    self._file_seen_at = now
                conn = self._conn
                deadline = now + self._breaker.budget
                try:
                    if not self._waits_not:
                        # Left so until a thread's call: under load inline
                        # calls come in runs, and the pragma costs as much
                        # as a third of a read.
                        conn.execute("PRAGMA busy_timeout = 0")
                        self._waits_not = True
                    conn.set_progress_handler(
                        lambda: time.monotonic() > deadline, PROGRESS_STEPS
                    )
                    try:
                        return action()
                    finally:
                        conn.set_progress_handler(None, 0)
                except sqlite3.OperationalError as exc:
                    if is_lock_conflict(exc) or "interrupted" in str(exc):
                        raise WouldBlock(f"SQLite: {exc}") from None
                    raise StoreError(f"SQLite error: {exc}") from exc
                except sqlite3.Error as exc:
                    raise StoreError(f"SQLite error: {exc}") from exc
        finally:
            self._lock.release()


def _values(
    record: Mapping[str, Any], at: float | None
) -> tuple[str, str, float, str, bytes]:
    """The columns a write stores: job_id, job_status, updated_at, record,
    record_digest."""
    job_id = checked_job_id(record)
    at = checked_at(at)
    text = storedjson.kept_text(record)
    return (
        job_id,
        # The answers' own encoding: listings join this text as it is.
        # (NaN is refused with the whole record, just above.)
        jsontext.encode(record["job_status"]),
        time.time() if at is None else at,
        text,
        record_digest(text),
    )


def record_digest(text: str) -> bytes:
    """What tells a record text this store wrote from one changed since by
    another program or by hand (64 bits: a chance edit does not match). Not
    a guard against a program that computes it for text of its own."""
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _tombstone(values: Sequence[Any]) -> Tombstone:
    """A ``Tombstone`` from ``TOMBSTONE_COLUMNS``."""
    job_id, status, expired_at, position = values
    return Tombstone(job_id, status, float(expired_at), int(position))


def _time(value: Any) -> float:
    """A row's ``updated_at`` as answers need it: a finite number. Another
    program may have stored text, or 1e999, in the column (SQLite keeps any
    value); such a time is read as 0, the oldest there is."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return 0.0


def _row(values: Sequence[Any], *, with_record: bool) -> Row:
    """A ``Row`` from ``ROW_COLUMNS`` (and ``record`` after them)."""
    job_id, status, updated_at, position, epoch = values[:5]
    return Row(
        job_id,
        None if status is None else storedjson.ascii_only(status),
        _time(updated_at),
        f"{epoch}-{position:x}",
        position,
        storedjson.record(job_id, values[5]) if with_record else None,
    )


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
