"""What only the SQLite store promises: schema, WAL, other processes,
other programs' files."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobstatus_backends.sqlite import (
    APPLICATION_ID,
    CHANGED_SINCE_SQL,
    LISTING_JSON_SQL,
    SCHEMA_VERSION,
    SQLiteStore,
    path_from_url,
)
from jobstatus_core import ConfigError, StoreError, jsontext

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
    assert set(columns) == {"job_id", "job_status", "updated_at", "record"}
    assert columns["job_id"][5] == 1  # the primary key
    for sql in (CHANGED_SINCE_SQL, LISTING_JSON_SQL):
        plan = " ".join(
            str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, (0,))
        )
        assert "COVERING INDEX jobs_updated_at" in plan
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
    assert reader.changed_since_json(0) == '{"a":"done"}'
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
        count = sum("group_concat" in sql for sql in self.seen)
        self.seen.clear()
        return count


def test_a_kept_listing_sees_a_plain_sqlite_write(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    statements = Statements(store)
    store.put({"job_id": "a", "job_status": "done"}, at=100.0)
    store.put({"job_id": "b", "job_status": "done"}, at=200.0)
    assert store.changed_since_json(150.0) == '{"b":"done"}'
    assert store.changed_since_json(150.0) == '{"b":"done"}'
    assert statements.listings() == 1  # the second was the kept one
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE jobs SET job_status = '\"redone\"' WHERE job_id = 'b'")
    conn.close()
    assert store.changed_since_json(150.0) == '{"b":"redone"}'
    assert statements.listings() == 1
    store.close()


def test_an_empty_listing_is_kept_until_a_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    statements = Statements(store)
    assert store.changed_since_json(10.0) == "{}"
    assert store.changed_since_json(20.0) == "{}"
    assert store.changed_since_json(1e9) == "{}"
    assert statements.listings() == 1  # read once, kept for every later start
    store.put({"job_id": "late", "job_status": "done"}, at=30.0)
    assert store.changed_since_json(20.0) == '{"late":"done"}'
    assert statements.listings() == 1
    store.close()


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
    for n in range(3):
        store.put({"job_id": f"old-{n}", "job_status": "done"}, at=100.0 + n)
    assert store.changed_since_json(0) == (
        '{"old-0":"done","old-1":"done","old-2":"done"}'
    )
    other_store(tmp_path / "backup.db", "new")
    os.replace(tmp_path / "backup.db", path)
    assert store.changed_since_json(0) == '{"new":"restored"}'  # not kept, not mixed
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
    assert store.changed_since_json(0) == '{"old":"done"}'
    for name in ("jobs.db", "jobs.db-wal", "jobs.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(StoreError, match=r"the database file jobs\.db is gone"):
        store.changed_since_json(0)
    other_store(path, "new")
    assert store.changed_since_json(0) == '{"new":"restored"}'
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
        store.changed_since_json(0)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    store.close()


def write_rows(path: Path, rows: list[tuple[object, object, float, str]]) -> None:
    """Rows put in the store's table by another program, bypassing the store."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?)", rows)
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
    text = store.changed_since_json(0)
    assert text.isascii()
    listed = json.loads(text, parse_constant=lambda name: pytest.fail(name))
    assert listed == {
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
    assert dict(store.changed_since(0)) == listed
    assert json.loads(jsontext.encode(dict(store.changed_since(0)))) == listed
    store.close()


def test_a_foreign_record_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    write_rows(path, [("bare", '"done"', 1.0, "not json"), ("list", '"x"', 1.0, "[]")])
    for job_id in ("bare", "list"):
        with pytest.raises(StoreError, match=f"the record of job {job_id} is not"):
            store.get(job_id)
    store.close()
