"""What only the SQLite store promises: schema, WAL, other processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jobstatus_backends.sqlite import (
    CHANGED_SINCE_SQL,
    SCHEMA_VERSION,
    SQLiteStore,
    path_from_url,
)
from jobstatus_core import ConfigError

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
    plan = " ".join(
        str(row)
        for row in conn.execute("EXPLAIN QUERY PLAN " + CHANGED_SINCE_SQL, (0,))
    )
    assert "jobs_updated_at" in plan
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


WRITER = """
import sys
from jobstatus_backends.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
for i in range(300):
    store.put({"job_id": f"p-{i}", "job_status": "done", "i": i}, at=1000.0 + i)
store.close()
"""


def test_a_second_process_writing_while_this_one_reads(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    seen = 0
    while writer.poll() is None:
        store.put({"job_id": "local", "job_status": "running"}, at=999.0)
        seen = max(seen, len(dict(store.changed_since(1000.0))))
    assert writer.wait() == 0
    listing = dict(store.changed_since(1000.0))
    assert len(listing) == 300 and seen <= 300
    assert store.get("p-299") == {"job_id": "p-299", "job_status": "done", "i": 299}
    store.close()
