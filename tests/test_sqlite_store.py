"""What only the SQLite store promises: schema, WAL, other processes,
other programs' files."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from jobstatus_backends.recorder import Recorder
from jobstatus_backends.registry import store_from_url
from jobstatus_backends.sqlite import (
    BURIED_SQL,
    FORGET_SQL,
    KEPT_COUNTS_SQL,
    PAGE_SQL,
    ROW_COLUMNS,
    STALE_OTHER_SQL,
    STALE_STATUS_SQL,
    TOMBSTONES_SQL,
    WINDOW_COUNTS_SQL,
    WINDOW_SQL,
    SQLiteStore,
    path_from_url,
    record_digest,
)
from jobstatus_backends.sqliteschema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from jobstatus_core import (
    ConfigError,
    Expiring,
    StoreError,
    WouldBlock,
    jsontext,
    nowait,
)
from jobstatus_core.listing import Listings
from jobstatus_core.rows import Query, Stale

from .helpers import clean_env

pytestmark = pytest.mark.sqlite


def test_schema_wal_and_version(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "done"}, at=5.0)
    store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    columns = {row[1]: row for row in conn.execute("PRAGMA table_info(jobs)")}
    assert set(columns) == {
        "job_id",
        "job_status",
        "updated_at",
        "record",
        "position",
        "record_digest",
    }
    assert columns["job_id"][5] == 1  # the primary key
    conn.close()


def plan(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(row[3]) for row in rows)


def test_every_read_walks_an_index(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "done"}, at=5.0)
    store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    # The Toolkit listing never visits the table, nor sorts.
    listing = plan(conn, WINDOW_SQL, (0,))
    assert "COVERING INDEX jobs_updated_at" in listing and "TEMP" not in listing
    # A page walks the change order from the cursor and stops at the limit.
    page = PAGE_SQL.format(columns=ROW_COLUMNS, where="")
    assert "INDEX jobs_position (position>?)" in plan(conn, page, (0, 100))
    by_status = PAGE_SQL.format(
        columns=ROW_COLUMNS, where=" AND job_status = ? AND updated_at >= ?"
    )
    walk = plan(conn, by_status, (0, '"done"', 0.0, 100))
    assert "INDEX jobs_status_position (job_status=? AND position>?)" in walk
    assert "TEMP B-TREE" not in walk
    # Counts read the kept table, not the jobs; in a window, the index range.
    counts = plan(conn, KEPT_COUNTS_SQL, ())
    assert "job_counts" in counts and "jobs " not in counts + " "
    in_window = plan(conn, WINDOW_COUNTS_SQL, (0.0,))
    assert "COVERING INDEX jobs_updated_at (updated_at>?)" in in_window
    conn.close()


def test_reopening_keeps_jobs(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "jobs.db")
    first.put({"job_id": "j", "job_status": "done"}, at=5.0)
    first.close()
    second = SQLiteStore(tmp_path / "jobs.db")
    assert second.get("j") == {"job_id": "j", "job_status": "done"}
    second.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "jobs.db").close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this jobstatus"):
        SQLiteStore(tmp_path / "jobs.db")


def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "jobs.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot use"):
        SQLiteStore(tmp_path / "jobs.db")


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SQLiteStore(tmp_path / "nope" / "jobs.db")


def test_url_forms() -> None:
    assert path_from_url("sqlite:///abs/jobs.db") == Path("/abs/jobs.db")
    assert path_from_url("sqlite:rel/jobs.db") == Path("rel/jobs.db")
    assert path_from_url("sqlite:///with%20space.db") == Path("/with space.db")
    for bad in ("sqlite://host/jobs.db", "sqlite:///", "sqlite:"):
        with pytest.raises(ConfigError):
            path_from_url(bad)


def hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    """Another connection takes the write lock and keeps it for a while."""
    ready = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        ready.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait()
    return thread


def test_a_short_lock_is_waited_for(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    holder = hold_write_lock(tmp_path / "jobs.db", 0.5)
    store.put({"job_id": "j", "job_status": "done"}, at=1.0)
    holder.join()
    assert store.get("j") == {"job_id": "j", "job_status": "done"}
    store.close()


def test_a_lock_held_past_the_bound_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db", busy_timeout=0.05)
    holder = hold_write_lock(tmp_path / "jobs.db", 1.5)
    started = time.monotonic()
    with pytest.raises(StoreError, match="database is locked"):
        store.put({"job_id": "j", "job_status": "done"}, at=1.0)
    assert time.monotonic() - started < 1.5  # bounded: it gave up, it did not hang
    holder.join()
    store.put({"job_id": "j", "job_status": "done"}, at=1.0)  # and it recovers
    assert store.get("j") is not None
    store.close()


def test_a_lock_held_throughout_costs_one_busy_timeout(tmp_path: Path) -> None:
    """A lock held past SQLite's own wait is not waited for again by each
    retry (those are for conflicts that skip the wait): the bound is one
    busy timeout and the retries' pauses, not four busy timeouts."""
    store = SQLiteStore(tmp_path / "jobs.db", busy_timeout=0.5)
    holder = hold_write_lock(tmp_path / "jobs.db", 5.0)
    started = time.monotonic()
    with pytest.raises(StoreError, match="database is locked"):
        store.put({"job_id": "j", "job_status": "done"}, at=1.0)
    # 0.5 s and the pauses (0.35 s) at most; four waits would be 2.35 s.
    assert time.monotonic() - started < 1.5
    holder.join()
    store.close()


def fingerprint(directory: Path) -> dict[str, str]:
    """Every file in ``directory`` by name, with a hash of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


FOREIGN_SCHEMAS = {
    "another table": ["CREATE TABLE unrelated (x)"],
    "its own jobs table": [
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT, state TEXT)",
        "INSERT INTO jobs (name, state) VALUES ('backup', 'ok')",
    ],
    "our jobs table and another version": [
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, job_status TEXT,"
        " updated_at FLOAT NOT NULL, record TEXT NOT NULL)",
        "PRAGMA user_version = 7",
    ],
    "no table but a user_version": ["PRAGMA user_version = 1"],
    "another application_id": ["PRAGMA application_id = 42"],
}


@pytest.mark.parametrize("schema", FOREIGN_SCHEMAS)
def test_another_programs_database_is_refused_and_left_unchanged(
    tmp_path: Path, schema: str
) -> None:
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    for statement in FOREIGN_SCHEMAS[schema]:
        conn.execute(statement)
    conn.close()
    before = fingerprint(tmp_path)
    with pytest.raises(ConfigError) as info:
        SQLiteStore(tmp_path / "app.db")
    message = str(info.value)
    assert "app.db" in message and "not a jobstatus database" in message
    assert "\n" not in message
    assert fingerprint(tmp_path) == before  # no WAL switch, no table, no -wal file


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    (tmp_path / "jobs.db").touch()  # as `touch` or a deploy script leaves it
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "done"}, at=5.0)
    store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


@pytest.fixture
def read_only_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory whose files this process cannot write, once the test has
    put them there and called ``protect``."""
    directory = tmp_path / "ro"
    directory.mkdir()
    if os.geteuid() == 0:
        # root may write anything: let permission checks answer as they
        # would for anyone else (SQLite's own mode=ro is still the real one).
        def access(path: str | Path, mode: int) -> bool:
            return not mode & os.W_OK or bool(os.stat(path).st_mode & 0o222)

        monkeypatch.setattr("jobstatus_backends.sqlite.os.access", access)
    yield directory
    directory.chmod(0o755)


def protect(directory: Path) -> None:
    for path in directory.iterdir():
        path.chmod(0o444)
    directory.chmod(0o555)


def test_a_read_only_database_is_read_as_it_is(read_only_dir: Path) -> None:
    store = SQLiteStore(read_only_dir / "jobs.db")
    store.put({"job_id": "a", "job_status": "done"}, at=5.0)
    store.close()  # the last connection: the WAL is folded in and removed
    protect(read_only_dir)
    before = (read_only_dir / "jobs.db").read_bytes()
    reader = SQLiteStore(read_only_dir / "jobs.db")
    assert list(reader.window(0).members) == ['"a":"done"']
    assert reader.mark().head == 1
    assert reader.get("a") == {"job_id": "a", "job_status": "done"}
    with pytest.raises(StoreError, match="readonly"):
        reader.put({"job_id": "b", "job_status": "done"})
    reader.close()
    # Unchanged: no WAL switch, no marking. (SQLite may leave an empty -wal
    # and -shm beside it where the directory lets it, as any reader does.)
    assert (read_only_dir / "jobs.db").read_bytes() == before


def test_a_read_only_database_that_needs_migrating_is_one_line(
    read_only_dir: Path,
) -> None:
    conn = sqlite3.connect(read_only_dir / "jobs.db")
    conn.execute(
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, job_status TEXT,"
        " updated_at FLOAT NOT NULL, record TEXT NOT NULL)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    protect(read_only_dir)
    before = fingerprint(read_only_dir)
    with pytest.raises(ConfigError) as info:
        SQLiteStore(read_only_dir / "jobs.db")
    message = str(info.value)
    assert "jobs.db" in message and "read-only" in message and "\n" not in message
    assert "schema version 1" in message
    assert fingerprint(read_only_dir) == before


class Statements:
    """The SQL statements a store's connection runs, as they run."""

    def __init__(self, store: SQLiteStore) -> None:
        self.seen: list[str] = []
        store._conn.set_trace_callback(self.seen.append)

    def listings(self) -> int:
        """How many listings were read from the table since the last call."""
        count = sum("ORDER BY updated_at" in sql for sql in self.seen)
        self.seen.clear()
        return count


def listings_of(store: SQLiteStore) -> Listings:
    """The kept listings of a service over ``store``, at a clock standing still."""
    return Listings(store, timer=lambda: 1000.0)


def test_a_kept_listing_sees_a_plain_sqlite_write(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    listings = listings_of(store)
    statements = Statements(store)
    store.put({"job_id": "a", "job_status": "done"}, at=100.0)
    store.put({"job_id": "b", "job_status": "done"}, at=200.0)
    assert listings.json(150.0) == '{"b":"done"}'
    assert listings.json(150.0) == '{"b":"done"}'
    assert statements.listings() == 1  # the second was the kept one
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE jobs SET job_status = '\"redone\"' WHERE job_id = 'b'")
    conn.close()
    # The write took a position (a trigger), so the mark moved at once.
    assert listings.json(150.0) == '{"b":"redone"}'
    assert statements.listings() == 1
    store.close()


def test_an_empty_listing_is_kept_until_a_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    listings = listings_of(store)
    statements = Statements(store)
    assert listings.json(10.0) == "{}"
    assert listings.json(20.0) == "{}"
    assert listings.json(1e9) == "{}"
    assert statements.listings() == 1  # read once, kept for every later start
    store.put({"job_id": "late", "job_status": "done"}, at=30.0)
    assert listings.json(20.0) == '{"late":"done"}'
    assert statements.listings() == 1
    store.close()


def listed(store: SQLiteStore, cutoff: float = 0.0) -> str:
    """The Toolkit listing's JSON text, as the core joins it."""
    return jsontext.join_members(store.window(cutoff).members)


def other_store(path: Path, *job_ids: str) -> None:
    """A database of the same kind, written by someone else at ``path``."""
    other = SQLiteStore(path)
    for job_id in job_ids:
        other.put({"job_id": job_id, "job_status": "restored"}, at=500.0)
    other.close()


def test_a_file_replaced_while_serving_is_reopened(tmp_path: Path) -> None:
    """A restore from backup: another database renamed over the store's."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    listings = listings_of(store)
    for n in range(3):
        store.put({"job_id": f"old-{n}", "job_status": "done"}, at=100.0 + n)
    assert listings.json(0) == '{"old-0":"done","old-1":"done","old-2":"done"}'
    before = store.mark()
    other_store(tmp_path / "backup.db", "new")
    os.replace(tmp_path / "backup.db", path)
    assert listings.json(0) == '{"new":"restored"}'  # not kept, not mixed
    assert store.mark().epoch != before.epoch  # so cursors of the old file expire
    assert store.get("old-0") is None
    assert store.get("new") == {"job_id": "new", "job_status": "restored"}
    store.put({"job_id": "after", "job_status": "done"}, at=600.0)
    store.close()
    reopened = SQLiteStore(path)  # the writes went to the new file
    assert dict(reopened.changed_since(0)) == {"new": "restored", "after": "done"}
    reopened.close()


def test_a_deleted_and_recreated_file_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "old", "job_status": "done"}, at=100.0)
    assert listed(store) == '{"old":"done"}'
    for name in ("jobs.db", "jobs.db-wal", "jobs.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(StoreError, match=r"the database file jobs\.db is gone"):
        store.window(0)
    other_store(path, "new")
    assert listed(store) == '{"new":"restored"}'
    assert store.get("old") is None
    store.close()


def test_a_foreign_file_in_the_stores_place_is_an_error_not_a_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "old", "job_status": "done"}, at=100.0)
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("CREATE TABLE unrelated (x)")
    conn.close()
    os.replace(tmp_path / "app.db", path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match="not a jobstatus database"):
        store.window(0)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    store.close()


def test_the_file_put_back_after_a_refused_one_is_read_again(tmp_path: Path) -> None:
    """A file refused in the store's place, then the store's own file moved
    back: the same file it had open before, read again, not the connection
    closed when the refused one came."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "kept", "job_status": "done"}, at=100.0)
    with nowait.attempt():  # the loop's reads look at the path each second
        assert store.get("kept") is not None
    os.replace(path, tmp_path / "aside.db")
    path.write_bytes(os.urandom(8192))
    for _ in range(2):
        with pytest.raises(StoreError, match=r"cannot use 'jobs\.db'"):
            store.get("kept")
        # On the loop, the path is looked at first: to a thread, never a
        # statement on the connection closed for the refused file.
        with nowait.attempt(), pytest.raises(WouldBlock):
            store.get("kept")
    os.replace(tmp_path / "aside.db", path)
    with nowait.attempt(), pytest.raises(WouldBlock):
        store.get("kept")
    assert store.get("kept") == {"job_id": "kept", "job_status": "done"}
    assert listed(store) == '{"kept":"done"}'
    store.close()


def write_rows(path: Path, rows: list[tuple[object, object, float, str]]) -> None:
    """Rows put in the store's table by another program, bypassing the store."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany(
        "INSERT INTO jobs (job_id, job_status, updated_at, record) VALUES (?, ?, ?, ?)",
        rows,
    )
    conn.close()


def test_foreign_statuses_list_as_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "ours", "job_status": "done"}, at=1.0)
    write_rows(
        path,
        [
            ("bare", "done", 2.0, "{}"),
            ("accented", '"café ✓ 🎬"', 3.0, "{}"),
            ("bare-accented", "é\u2028", 4.0, "{}"),
            ("nan", "NaN", 5.0, "{}"),
            ("half", '{"a": ', 6.0, "{}"),
            ('quote"d', '"x"', 7.0, "{}"),
            ("spaced", '{"a": [1, 2]}', 8.0, "{}"),
            ("bytes", b"\xff\xfe", 9.0, "{}"),
        ],
    )
    text = listed(store)
    assert text.isascii()
    listing = json.loads(text, parse_constant=lambda name: pytest.fail(name))
    assert listing == {
        "ours": "done",
        "bare": "done",
        "accented": "café ✓ 🎬",
        "bare-accented": "é\u2028",
        "nan": "NaN",
        "half": '{"a": ',
        'quote"d': "x",
        "spaced": {"a": [1, 2]},
        "bytes": "\ufffd\ufffd",
    }
    assert dict(store.changed_since(0)) == listing
    assert json.loads(jsontext.encode(dict(store.changed_since(0)))) == listing
    # Rows and counts carry the same statuses as JSON texts, in ASCII.
    rows = store.page(Query(limit=100))
    assert {row.job_id: json.loads(row.status or "") for row in rows} == listing
    assert all(row.status is not None and row.status.isascii() for row in rows)
    counts = store.counts(None, None)
    assert store.counts(None, 0.0) == counts
    by_value = {jsontext.encode(json.loads(status)): n for status, n in counts.items()}
    assert by_value == {
        jsontext.encode(value): 2 if value == "done" else 1  # ours and the bare one
        for value in listing.values()
    }
    store.close()


def test_a_foreign_record_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    write_rows(path, [("bare", '"done"', 1.0, "not json"), ("list", '"x"', 1.0, "[]")])
    for job_id in ("bare", "list"):
        with pytest.raises(StoreError, match=f"the record of job {job_id} is not"):
            store.get(job_id)
    store.close()


def test_a_foreign_time_that_is_not_a_number_reads_as_0(
    tmp_path: Path, serve_service: Any
) -> None:
    """SQLite keeps any value in ``updated_at``: text or 1e999 written by
    another program reads as 0 in rows, so that pages and the job's answer
    read it, never a 500."""
    import httpx

    from .helpers import API_KEY, service_for

    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "ours", "job_status": "done"}, at=5.0)
    record = '{{"job_id": "{}", "job_status": "done"}}'
    write_rows(
        path,
        [
            ("text", '"done"', "yesterday", record.format("text")),  # type: ignore[list-item]
            ("huge", '"done"', 1e999, record.format("huge")),
        ],
    )
    rows = {row.job_id: row.updated_at for row in store.page(Query(limit=10))}
    assert rows == {"ours": 5.0, "text": 0.0, "huge": 0.0}
    # Retention compares the stored value: neither ever looks old enough.
    assert [row.job_id for row in store.stale(Stale(before=1e12))] == ["ours"]
    url = serve_service(service_for(store))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        page = http.get("/v1/jobs")
        assert page.status_code == 200, page.text
        for job_id in ("text", "huge"):
            one = http.get(f"/v1/job/{job_id}")
            assert one.status_code == 200, one.text
            assert one.json()["response"]["job_status"] == "done"
    store.close()


def version_3_file(path: Path) -> None:
    """A database as jobstatus wrote it at schema version 3, before the
    change order: jobs written at 30, 10 and 20, one without a status."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE [jobs] ([job_id] TEXT PRIMARY KEY, [job_status] TEXT,"
        " [updated_at] FLOAT NOT NULL, [record] TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE INDEX jobs_updated_at ON jobs (updated_at, job_id, job_status)"
    )
    rows = [("c", '"done"', 30.0), ("a", '"done"', 10.0), ("b", '"failed"', 20.0)]
    for job_id, status, at in rows:
        record = json.dumps({"job_id": job_id, "job_status": json.loads(status)})
        conn.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?)", (job_id, status, at, record)
        )
    conn.execute("INSERT INTO jobs VALUES ('x', NULL, 40.0, '{\"job_id\": \"x\"}')")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 3")
    conn.close()


def test_a_version_3_file_gets_the_change_order(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    version_3_file(path)
    store = SQLiteStore(path)
    # The jobs there take positions in the order they were last written.
    assert [row.job_id for row in store.page(Query(limit=10))] == ["a", "b", "c"]
    assert store.mark().head == 4  # x too, though no page lists it
    assert store.counts(None, None) == {'"done"': 2, '"failed"': 1}
    assert listed(store) == '{"a":"done","b":"failed","c":"done"}'
    store.put({"job_id": "a", "job_status": "failed"}, at=50.0)
    assert [row.job_id for row in store.page(Query(after=4, limit=10))] == ["a"]
    assert store.counts(None, None) == {'"done"': 1, '"failed"': 2}
    epoch = store.mark().epoch
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    again = SQLiteStore(path)  # migrated once: the same life of the data
    assert again.mark().epoch == epoch
    again.close()


def test_writes_by_other_programs_take_positions_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "a", "job_status": "done"}, at=1.0)
    store.put({"job_id": "b", "job_status": "done"}, at=2.0)
    seen = store.page(Query(limit=10))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE jobs SET job_status = '\"failed\"' WHERE job_id = 'a'")
    conn.execute(
        "INSERT INTO jobs (job_id, job_status, updated_at, record)"
        " VALUES ('c', '\"queued\"', 3.0, '{}')"
    )
    head = store.mark().head
    conn.execute("DELETE FROM jobs WHERE job_id = 'b'")
    conn.close()
    resumed = store.page(Query(after=seen[-1].position, limit=10))
    assert [(row.job_id, row.status) for row in resumed] == [
        ("a", '"failed"'),
        ("c", '"queued"'),
    ]
    assert store.mark().head == head + 1  # the deletion moved the mark too
    assert store.counts(None, None) == {'"failed"': 1, '"queued"': 1}
    store.close()


def test_a_copy_put_in_place_is_a_new_life_of_the_data(tmp_path: Path) -> None:
    """A backup copied back repeats earlier positions: its cursors must expire."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "a", "job_status": "done"}, at=1.0)
    store.close()  # the WAL is folded in: the file alone is the database
    backup = tmp_path / "backup.db"
    backup.write_bytes(path.read_bytes())
    store = SQLiteStore(path)
    before = store.mark()
    store.put({"job_id": "b", "job_status": "done"}, at=2.0)
    os.replace(backup, path)  # the copy, restored
    after = store.mark()
    assert after.epoch != before.epoch and after.head == before.head
    row = store.read("a")
    assert row is not None and row.version.startswith(after.epoch)
    store.close()
    renamed = tmp_path / "moved.db"
    os.replace(path, renamed)  # a file moved, not copied, keeps its life
    moved = SQLiteStore(renamed)
    assert moved.mark() == after
    moved.close()


def test_a_version_of_another_life_never_swaps(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "a", "job_status": "queued"}, at=1.0)
    row = store.read("a")
    assert row is not None
    position = row.version.rpartition("-")[2]
    for stale in (f"000000000000-{position}", position, "nonsense", ""):
        assert not store.swap({"job_id": "a", "job_status": "x"}, expected=stale)
    assert store.swap({"job_id": "a", "job_status": "running"}, expected=row.version)
    store.close()


def test_connections_share_one_change_order(tmp_path: Path) -> None:
    """Two stores on one file (two processes, as SQLite sees them): every
    change gets its own position, and no recorded change is lost."""
    path = tmp_path / "jobs.db"
    stores = [SQLiteStore(path), SQLiteStore(path)]

    def record(store: SQLiteStore, tag: str) -> None:
        recorder = Recorder(store)
        for i in range(20):
            recorder.queued(f"{tag}-{i}")
            recorder.progress("shared", i)
            recorder.done(f"{tag}-{i}", i)

    threads = [
        threading.Thread(target=record, args=(store, f"s{n}"))
        for n, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    one, two = stores
    assert one.mark() == two.mark()
    rows = one.page(Query(limit=1000))
    assert len(rows) == 41  # each job once, at its last change
    positions = [row.position for row in rows]
    assert positions == sorted(set(positions))
    assert one.mark().head == 2 * 20 * 3  # one position per change
    assert one.counts(None, None) == {'"done"': 40, '"running"': 1}
    for store in stores:
        store.close()


def test_commits_are_synced_at_checkpoints(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    # NORMAL (1): no fsync per commit; see docs/stores.md.
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    store.close()


def test_retention_walks_indexes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "done"}, at=5.0)
    store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    # Old jobs of one status: a range of the index, in its order, no sort.
    some = plan(conn, STALE_STATUS_SQL, ('"done"', 10.0, 1000))
    assert "INDEX jobs_status_updated_at (job_status=? AND updated_at<?)" in some
    assert "TEMP B-TREE" not in some
    other = plan(conn, STALE_OTHER_SQL, (10.0, '["\\"done\\""]', 1000))
    assert "INDEX jobs_updated_at (updated_at<?)" in other
    assert "TEMP B-TREE" not in other
    assert "INDEX sqlite_autoindex_job_tombstones_1 (job_id=?)" in plan(
        conn, TOMBSTONES_SQL, ('["j"]',)
    )
    feed = plan(conn, BURIED_SQL.format(where=""), (0, 100))
    assert "INTEGER PRIMARY KEY (rowid>?)" in feed and "TEMP" not in feed
    forget = plan(conn, FORGET_SQL, (10.0, 100))
    assert "INDEX job_tombstones_expired_at (expired_at<?)" in forget
    conn.close()


def version_4_file(path: Path) -> None:
    """A database as jobstatus wrote it at schema version 4, before
    retention: a, b done at 1 and 2, c running at 3."""
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    for step in MIGRATIONS[:4]:
        step(db)
    for job_id, status, at in (
        ("a", "done", 1.0),
        ("b", "done", 2.0),
        ("c", "running", 3.0),
    ):
        record = json.dumps({"job_id": job_id, "job_status": status})
        conn.execute(
            "INSERT INTO jobs (job_id, job_status, updated_at, record)"
            " VALUES (?, ?, ?, ?)",
            (job_id, jsontext.encode(status), at, record),
        )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 4")
    conn.close()


def test_a_version_4_file_opens_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    version_4_file(path)
    store = SQLiteStore(path)
    before = store.mark()
    assert before.head == 3
    assert [row.job_id for row in store.page(Query(limit=10))] == ["a", "b", "c"]
    (tomb,) = store.expire(
        store.stale(Stale(before=10.0, statuses=frozenset({'"done"'}), limit=1)),
        at=20.0,
    )
    assert (tomb.job_id, tomb.position) == ("a", 4)
    assert store.mark() == type(before)(before.epoch, 4)
    # Its rows have no digest yet: read, parsed and encoded as before.
    row, text = store.read_text("b") or (None, "")
    assert text == '{"job_id":"b","job_status":"done"}'
    assert row is not None and row.record is None and row.position == 2
    assert store.counts(None, None) == {'"done"': 1, '"running"': 1}
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_another_program_writing_an_expired_id_revives_it(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "a", "job_status": "done"}, at=1.0)
    store.expire(store.stale(Stale(before=10.0)), at=20.0)
    assert store.tombstones(["a"]).keys() == {"a"}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO jobs (job_id, job_status, updated_at, record)"
        """ VALUES ('a', '"queued"', 30.0, '{"job_id": "a", "job_status": "queued"}')"""
    )
    conn.close()
    assert store.tombstones(["a"]) == {} and store.buried(Query()) == []
    store.close()


# A purger: reads every stale job first, then, once told to go, expires them
# in batches, while the others run: its rows may be stale by then.
PURGER = """
import json, sys
from jobstatus_backends.registry import store_from_url
from jobstatus_core.rows import Stale
store = store_from_url(sys.argv[1])
rows = store.stale(Stale(before=5000.0, limit=100_000))
print("ready", flush=True)
sys.stdin.readline()
expired = []
for start in range(0, len(rows), 20):
    expired += [t.job_id for t in store.expire(rows[start:start + 20], at=9000.0)]
store.close()
print(json.dumps(expired))
"""
# Writes every third job again, newest first: not stale any more. Says when
# half are written (before the purgers go), then writes the rest meanwhile.
REWRITER = """
import sys
import tempfile
from jobstatus_backends.registry import store_from_url
store = store_from_url(sys.argv[1])
store.mark()
print("ready", flush=True)
sys.stdin.readline()
ids = range(int(sys.argv[2]) - 1, -1, -3)
for n, i in enumerate(ids):
    store.put({"job_id": f"j{i:04}", "job_status": "running"}, at=10000.0)
    if n == len(ids) // 2:
        print("half", flush=True)
store.close()
"""


def purge_in_processes(url: str, jobs: int) -> None:
    """Two purger processes and a rewriter at once on the store at ``url``,
    which holds ``jobs`` stale jobs: each job is expired once, and a job
    written again stays (or comes back) alive, without a tombstone."""
    store = store_from_url(url)
    assert isinstance(store, Expiring)
    for i in range(jobs):
        store.put({"job_id": f"j{i:04}", "job_status": "done"}, at=float(i + 1))
    head = store.mark().head

    def start(script: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, url, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )

    processes = [start(PURGER), start(PURGER), start(REWRITER, str(jobs))]
    for process in processes:  # the purgers have read their rows
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
    purgers, rewriter = processes[:2], processes[2]
    assert rewriter.stdout is not None
    for process in (rewriter, *purgers):
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        if process is rewriter:  # half the rewrites come between read and expire
            assert rewriter.stdout.readline() == "half\n"
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0]
    expired = [job_id for output in outputs[:2] for job_id in json.loads(output)]
    rewritten = {f"j{i:04}" for i in range(jobs - 1, -1, -3)}
    everyone = {f"j{i:04}" for i in range(jobs)}
    assert len(expired) == len(set(expired))  # once each
    assert everyone - rewritten <= set(expired)
    ids = sorted(everyone)
    assert store.read_many(ids).keys() == rewritten
    assert store.tombstones(ids).keys() == everyone - rewritten
    assert store.stale(Stale(before=5000.0)) == []
    # One position per expiry and per write, none lost or shared.
    assert store.mark().head == head + len(expired) + len(rewritten)
    store.close()


def test_two_processes_purge_one_file_while_a_third_writes(tmp_path: Path) -> None:
    purge_in_processes(f"sqlite://{tmp_path / 'jobs.db'}", 600)


def test_its_own_record_texts_are_answered_as_written(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    record = {"job_id": "j", "job_status": "done", "note": "café", 1: "one"}
    store.put(record, at=5.0)
    conn = sqlite3.connect(tmp_path / "jobs.db")
    text, digest = conn.execute(
        "SELECT record, record_digest FROM jobs WHERE job_id = 'j'"
    ).fetchone()
    conn.close()
    # Written as answers write it (compact, ASCII, read back once) ...
    assert text == '{"job_id":"j","job_status":"done","note":"caf\\u00e9","1":"one"}'
    assert digest == record_digest(text)
    # ... and sent as it is.
    found = store.read_text("j")
    assert found is not None and found[1] == text
    assert found[0].version == store.read("j").version  # type: ignore[union-attr]
    store.close()


@pytest.mark.parametrize(
    "edit",
    [
        # Another program's JSON: spaced, raw non-ASCII, an escaped slash.
        "UPDATE jobs SET record = ? WHERE job_id = 'j'",
        # Its digest copied along by a careless program: still not ours.
        "UPDATE jobs SET record = ?, record_digest = record_digest WHERE job_id = 'j'",
        # A row another program wrote afresh, with no digest.
        "UPDATE jobs SET record = ?, record_digest = NULL WHERE job_id = 'j'",
        # The same JSON stored as a BLOB, its digest left.
        "UPDATE jobs SET record = CAST(? AS BLOB) WHERE job_id = 'j'",
        # A program that digests its own (non-ASCII) text the store's way.
        "UPDATE jobs SET record = ?1, record_digest = blake8(?1) WHERE job_id = 'j'",
    ],
)
def test_a_record_changed_by_another_program_is_parsed_not_passed_on(
    tmp_path: Path, edit: str
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "running"}, at=5.0)
    for _ in range(2):
        assert store.read_text("j") is not None  # kept, until the edit below
    conn = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    conn.create_function("blake8", 1, record_digest)
    edited = '{"job_id": "j", "job_status": "done", "url": "a\\/b", "note": "ü"}'
    conn.execute(edit, (edited,))
    conn.close()
    found = store.read_text("j")
    assert found is not None
    assert found[1] == '{"job_id":"j","job_status":"done","url":"a/b","note":"\\u00fc"}'
    assert found[1] == jsontext.encode(store.get("j"))
    store.close()


def statements_of(store: SQLiteStore) -> list[str]:
    """Every statement the store's connection runs from now on."""
    ran: list[str] = []
    store._conn.set_trace_callback(ran.append)
    return ran


def test_a_kept_answer_is_given_until_any_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "running"}, at=5.0)
    store.put({"job_id": "k", "job_status": "queued"}, at=5.0)
    ran = statements_of(store)
    first = store.read_text("j")
    assert len(ran) == 1  # asked once: the row alone, no proof
    assert store.read_text("j") == first
    assert len(ran) == 3 and ran[1] == "PRAGMA data_version"  # kept now
    ran.clear()
    assert store.read_text("j") == first
    assert ran == ["PRAGMA data_version"]  # the row is not read again
    # Its own write, to another job: everything kept is read again.
    store.put({"job_id": "k", "job_status": "done"}, at=6.0)
    ran.clear()
    assert store.read_text("j") == first
    assert len(ran) == 2
    # Another connection's commit (a second store on the file).
    other = SQLiteStore(tmp_path / "jobs.db")
    other.put({"job_id": "j", "job_status": "done"}, at=7.0)
    other.close()
    found = store.read_text("j")
    assert found is not None and found[1] == '{"job_id":"j","job_status":"done"}'
    assert found[0].version != first[0].version  # type: ignore[index]
    store.close()


def test_a_kept_answer_is_not_given_from_a_replaced_file(tmp_path: Path) -> None:
    """A restored file's connection counts its own data_version afresh."""
    path = tmp_path / "jobs.db"
    writer = SQLiteStore(path)
    writer.put({"job_id": "new", "job_status": "done"}, at=5.0)
    writer.close()
    store = SQLiteStore(path)  # no writes of its own: total_changes stays 0
    for _ in range(2):
        assert store.read_text("new") is not None
    other_store(tmp_path / "backup.db", "new")
    os.replace(tmp_path / "backup.db", path)
    found = store.read_text("new")
    assert found is not None and found[1] == '{"job_id":"new","job_status":"restored"}'
    store.close()


def test_the_cache_option(tmp_path: Path) -> None:
    off = SQLiteStore.from_url(f"sqlite://{tmp_path}/jobs.db?cache=0")
    off.put({"job_id": "j", "job_status": "done"})
    ran = statements_of(off)
    assert off.read_text("j") is not None and off.read_text("j") is not None
    assert len(ran) == 2 and "data_version" not in " ".join(ran)
    off.close()
    for bad in ("-1", "many", "", "1000"):
        with pytest.raises(ConfigError, match="cache"):
            SQLiteStore.from_url(f"sqlite://{tmp_path}/jobs.db?cache={bad}")


class LockedOnce:
    """The store's connection, whose first SELECT finds the database
    locked (fault injection): an inline read refused mid-call."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.failed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if not self.failed and sql.startswith("SELECT"):
            self.failed = True
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_read_refused_inline_and_made_on_a_thread_counts_once(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "done"}, at=5.0)
    conn = store._conn
    store._conn = LockedOnce(conn)  # type: ignore[assignment]
    with nowait.attempt(), pytest.raises(WouldBlock):
        store.read_text("j")
    store._conn = conn
    assert store.read_text("j") is not None  # the thread's attempt
    assert "j" not in store._kept  # type: ignore[operator]  # one request
    assert store.read_text("j") is not None  # a second request: kept now
    assert "j" in store._kept  # type: ignore[operator]
    store.close()


def _open_at_once(args: tuple[str, Any]) -> str | None:
    """In a process of its own: open the store when all the others do."""
    path, barrier = args
    barrier.wait()
    try:
        SQLiteStore(path).close()
    except Exception as exc:
        return repr(exc)
    return None


def test_processes_opening_one_new_file_at_once_all_open(tmp_path: Path) -> None:
    """As workers starting together do: SQLite refuses the switch to WAL at
    once, without its busy handler, while another opener is switching."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    openers = 6
    with context.Manager() as manager, context.Pool(openers) as pool:
        for round_ in range(5):
            path = str(tmp_path / f"new-{round_}.db")
            barrier = manager.Barrier(openers)
            failed = pool.map(_open_at_once, [(path, barrier)] * openers)
            assert failed == [None] * openers, failed


def test_a_read_only_database_in_a_read_only_directory_is_read(
    read_only_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no -shm can be made beside a WAL database, SQLite 3.40 says
    "attempt to write a readonly database" of mode=ro (before, "unable to
    open"); either way it is opened immutable, as docs/stores.md says."""
    import jobstatus_backends.sqlite as module

    store = SQLiteStore(read_only_dir / "jobs.db")
    store.put({"job_id": "a", "job_status": "done"}, at=5.0)
    store.close()
    protect(read_only_dir)
    opened: list[str] = []
    connect, prepare = sqlite3.connect, module.prepare

    def connecting(database: str, **options: Any) -> sqlite3.Connection:
        opened.append(database)
        return connect(database, **options)

    def preparing(conn: sqlite3.Connection, *args: Any) -> None:
        if opened[-1].endswith("mode=ro"):
            # The fault, injected: root may make the -shm anyone else may not.
            raise sqlite3.OperationalError("attempt to write a readonly database")
        prepare(conn, *args)

    monkeypatch.setattr(module.sqlite3, "connect", connecting)
    monkeypatch.setattr(module, "prepare", preparing)
    reader = SQLiteStore(read_only_dir / "jobs.db")
    assert reader.get("a") == {"job_id": "a", "job_status": "done"}
    assert opened[-2:] == [
        f"file:{read_only_dir}/jobs.db?mode=ro",
        f"file:{read_only_dir}/jobs.db?mode=ro&immutable=1",
    ]
    reader.close()
