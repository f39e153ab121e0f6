"""The SQLite store's schema: what makes a file jobstatus's, and the
migrations that bring one of any earlier version to this one's, inside one
transaction that two processes opening a new file at once take in turn."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable

import sqlite_utils

from jobstatus_core import ConfigError, jsontext

#: ``PRAGMA application_id`` of the files jobstatus creates ("jbst").
APPLICATION_ID = int.from_bytes(b"jbst", "big")
#: The columns of the ``jobs`` table, by which files of jobstatus versions
#: that set no application_id are recognised.
JOB_COLUMNS = {"job_id", "job_status", "updated_at", "record"}


def prepare(
    conn: sqlite3.Connection, name: str, writable: bool, busy_timeout: float
) -> None:
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
    _switch_to_wal(conn, busy_timeout)
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit
    # survives the process crashing; power loss may undo the last few
    # commits, never corrupt the file. FULL would cost an fsync per change.
    conn.execute("PRAGMA synchronous=NORMAL")
    inode = os.stat(name).st_ino
    if (
        version == SCHEMA_VERSION
        and _application_id(conn) == APPLICATION_ID
        and _claimed_inode(conn) == inode
    ):
        return
    # IMMEDIATE: two processes opening a new file at once migrate it once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn, name)
        db = sqlite_utils.Database(conn, execute_plugins=False)
        for step in MIGRATIONS[version:]:
            step(db)
        # A copy of the file (a backup put back in its place) repeats the
        # original's positions from an earlier point: as a new life of the
        # data, with a new epoch, it makes old cursors expire instead of
        # skipping changes. A file renamed into place keeps its inode.
        conn.execute(
            "UPDATE jobstatus_meta SET epoch = CASE WHEN inode IS NULL OR inode = ?"
            " THEN epoch ELSE ? END, inode = ?",
            (inode, _new_epoch(), inode),
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, tried again for up to ``busy_timeout``
    while another connection holds the lock it needs: SQLite answers the
    switch "database is locked" at once, without its busy handler, while
    another process opening the same new file is switching it (6 processes
    opening one new file at once: 8 refusals in 90 opens)."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_lock_conflict(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def _claimed_inode(conn: sqlite3.Connection) -> int | None:
    found = conn.execute("SELECT inode FROM jobstatus_meta").fetchone()
    return None if found is None else found[0]


def _application_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA application_id").fetchone()[0])


def _schema_version(conn: sqlite3.Connection, name: str) -> int:
    """The jobstatus schema version of the file: 0 when it is empty; raises
    ``ConfigError`` for a database of another program or a newer jobstatus."""
    # One statement, one snapshot: read one by one, another process's
    # migration committing in between showed its tables without its
    # application_id — "not a jobstatus database".
    application_id, version, objects = map(
        int,
        conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone(),
    )
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


def is_lock_conflict(exc: sqlite3.OperationalError) -> bool:
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


# Every change to jobs, by this store or by any other program writing the
# file, takes the next position (so cursors and kept listings see it) and
# keeps job_counts. The position is set by a second UPDATE of the row, of
# position alone, which fires no trigger again.
CHANGE_ORDER_TRIGGERS = (
    """CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs BEGIN
        UPDATE jobstatus_meta SET head = head + 1;
        UPDATE jobs SET position = (SELECT head FROM jobstatus_meta)
            WHERE rowid = NEW.rowid;
        INSERT INTO job_counts (status, n) SELECT NEW.job_status, 1
            WHERE NEW.job_status IS NOT NULL
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER jobs_updated
        AFTER UPDATE OF job_id, job_status, updated_at, record ON jobs BEGIN
        UPDATE jobstatus_meta SET head = head + 1;
        UPDATE jobs SET position = (SELECT head FROM jobstatus_meta)
            WHERE rowid = NEW.rowid;
        UPDATE job_counts SET n = n - 1
            WHERE status = OLD.job_status AND OLD.job_status IS NOT NEW.job_status;
        INSERT INTO job_counts (status, n) SELECT NEW.job_status, 1
            WHERE NEW.job_status IS NOT NULL AND NEW.job_status IS NOT OLD.job_status
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END""",
    # A deletion is a change too (the mark moves, kept listings go), though
    # no row is left to hold its position.
    """CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs BEGIN
        UPDATE jobstatus_meta SET head = head + 1;
        UPDATE job_counts SET n = n - 1 WHERE status = OLD.job_status;
    END""",
)


def _change_order(db: sqlite_utils.Database) -> None:
    conn = db.conn
    conn.execute(
        "CREATE TABLE jobstatus_meta (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " epoch TEXT NOT NULL, head INTEGER NOT NULL, inode INTEGER)"
    )
    conn.execute("CREATE TABLE job_counts (status PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute("ALTER TABLE jobs ADD COLUMN position INTEGER NOT NULL DEFAULT 0")
    # Jobs already there take positions in the order they were last written.
    conn.execute(
        "UPDATE jobs SET position = ranked.n FROM (SELECT rowid AS id,"
        " row_number() OVER (ORDER BY updated_at, job_id) AS n FROM jobs) AS ranked"
        " WHERE jobs.rowid = ranked.id"
    )
    conn.execute(
        "INSERT INTO jobstatus_meta (id, epoch, head) SELECT 1, ?, count(*) FROM jobs",
        (_new_epoch(),),
    )
    conn.execute(
        "INSERT INTO job_counts (status, n) SELECT job_status, count(*) FROM jobs"
        " WHERE job_status IS NOT NULL GROUP BY job_status"
    )
    conn.execute("CREATE INDEX jobs_position ON jobs (position, updated_at)")
    conn.execute(
        "CREATE INDEX jobs_status_position ON jobs (job_status, position, updated_at)"
    )
    for trigger in CHANGE_ORDER_TRIGGERS:
        conn.execute(trigger)


def _tombstones(db: sqlite_utils.Database) -> None:
    conn = db.conn
    # Keyed by position (the rowid: no key stored twice), so the feed walks
    # the table itself; job_id for lookups and revivals, expired_at for
    # forget. No record: a tombstone is its id, status, time and place.
    conn.execute(
        "CREATE TABLE job_tombstones (position INTEGER PRIMARY KEY,"
        " job_id TEXT NOT NULL UNIQUE, status TEXT NOT NULL, expired_at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE INDEX job_tombstones_expired_at ON job_tombstones (expired_at)"
    )
    # Retention's walk of some statuses, oldest first, within each status.
    conn.execute(
        "CREATE INDEX jobs_status_updated_at ON jobs (job_status, updated_at, job_id)"
    )
    # A job written again is alive: its tombstone goes in the same statement.
    conn.execute(
        "CREATE TRIGGER jobs_revived AFTER INSERT ON jobs BEGIN"
        " DELETE FROM job_tombstones WHERE job_id = NEW.job_id; END"
    )


def _new_epoch() -> str:
    return uuid.uuid4().hex[:12]


def _record_digests(db: sqlite_utils.Database) -> None:
    # No rewrite of the rows there: without a digest a record is parsed and
    # encoded per read, as before, until it is written again.
    db.conn.execute("ALTER TABLE jobs ADD COLUMN record_digest BLOB")


#: MIGRATIONS[v] takes a database from schema version v to v + 1.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _create_jobs_table,
    _compact_statuses,
    _covering_listing_index,
    _change_order,
    _tombstones,
    _record_digests,
)
SCHEMA_VERSION = len(MIGRATIONS)
