"""What only the SQLite store promises: schema, WAL, other processes."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from jobstatus_backends.sqlite import (
    CHANGED_SINCE_SQL,
    LISTING_JSON_SQL,
    SCHEMA_VERSION,
    SQLiteStore,
    path_from_url,
)
from jobstatus_core import ConfigError, StoreError

pytestmark = pytest.mark.sqlite


def test_schema_wal_and_version(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "j", "job_status": "done"}, at=5.0)
    store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
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


def test_version_zero_file_is_migrated_forward(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "jobs.db")
    conn.execute("CREATE TABLE unrelated (x)")  # a file some other tool made
    conn.commit()
    conn.close()
    SQLiteStore(tmp_path / "jobs.db").close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"jobs", "unrelated"} <= tables
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_version_1_statuses_are_compacted(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "jobs.db")
    conn.execute(
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, job_status TEXT,"
        " updated_at FLOAT NOT NULL, record TEXT NOT NULL)"
    )
    conn.execute(
        "INSERT INTO jobs VALUES (?, ?, ?, ?)",
        (
            "a",
            '{"stage": [1, 2]}',
            5.0,
            '{"job_id": "a", "job_status": {"stage": [1, 2]}}',
        ),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "jobs.db")
    assert store.changed_since_json(0) == '{"a":{"stage":[1,2]}}'
    assert dict(store.changed_since(0)) == {"a": {"stage": [1, 2]}}
    store.close()


def test_a_kept_listing_sees_a_plain_sqlite_write(tmp_path: Path) -> None:
    """Kept listings (see the conformance suite) notice any connection's commit."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "a", "job_status": "done"}, at=100.0)
    store.put({"job_id": "b", "job_status": "done"}, at=200.0)
    assert store.changed_since_json(150.0) == '{"b":"done"}'
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE jobs SET job_status = '\"redone\"' WHERE job_id = 'b'")
    conn.close()
    assert store.changed_since_json(150.0) == '{"b":"redone"}'
    store.close()


def test_an_empty_listing_is_kept_until_a_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    assert store.changed_since_json(10.0) == "{}"
    assert store.changed_since_json(20.0) == "{}"
    store.put({"job_id": "late", "job_status": "done"}, at=30.0)
    assert store.changed_since_json(20.0) == '{"late":"done"}'
    store.close()
