"""Faults in the store: the contract's error, one line, and recovery after."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobstatus_backends import jobfiles
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.sqlite import SQLiteStore
from jobstatus_core import JOB_STATUS_PATH, JOBS_STATUS_PATH, Store, StoreError

from .helpers import API_KEY, service_for, wait_for

JSON = {"content-type": "application/json", "x-api-key": API_KEY}


def ask(url: str, job_id: str | None = None) -> httpx.Response:
    if job_id is None:
        return httpx.post(
            url + JOBS_STATUS_PATH, json={"since_seconds": 1e9}, headers=JSON
        )
    return httpx.post(url + JOB_STATUS_PATH, json={"job_id": job_id}, headers=JSON)


@pytest.fixture
def file_store(tmp_path: Path) -> Any:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, reconcile_interval=0.2)
    store.put({"job_id": "a", "job_status": "done"})
    yield store
    store.close()


@pytest.mark.filesystem
def test_permission_denied_is_500_then_recovers(
    file_store: FileStore,
    serve_service: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = serve_service(service_for(file_store))
    real_open = os.open

    def denied(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith("a.json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(jobfiles.os, "open", denied)
    failed = ask(url, "a")
    assert failed.status_code == 500
    # One line, naming the job, not the path (it was the OSError's text,
    # logged with a traceback and the absolute path).
    assert failed.json()["message"] == (
        "Failed to retrieve job status: the file of job a cannot be read:"
        " permission denied"
    )
    assert ask(url).status_code == 200  # the listing does not fail for it
    monkeypatch.undo()
    assert ask(url, "a").status_code == 200


@pytest.mark.filesystem
def test_disk_full_on_write_keeps_the_old_record(
    file_store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobfiles.os, "fsync", full)
    with pytest.raises(
        StoreError, match="could not write job a: No space left on device"
    ):
        file_store.put({"job_id": "a", "job_status": "overwritten"})
    monkeypatch.undo()
    assert file_store.get("a") == {"job_id": "a", "job_status": "done"}
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == [
        "a.json"
    ]  # no temp left


@pytest.mark.filesystem
def test_jobs_directory_replaced_by_a_file(
    file_store: FileStore, tmp_path: Path, serve_service: Callable[..., str]
) -> None:
    url = serve_service(service_for(file_store))
    shutil.rmtree(tmp_path / "jobs")
    (tmp_path / "jobs").write_text("not a directory")
    listing = ask(url)
    assert (
        listing.status_code == 404
        and listing.json()["message"] == "Jobs directory not found"
    )
    assert ask(url, "a").status_code == 404
    (tmp_path / "jobs").unlink()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "b.json").write_text('{"job_id": "b", "job_status": "back"}')
    wait_for(lambda: ask(url).json()["response"] == {"b": "back"}, 5)


@pytest.mark.filesystem
def test_observer_dying_while_serving(
    file_store: FileStore, tmp_path: Path, serve_service: Callable[..., str]
) -> None:
    url = serve_service(service_for(file_store))
    assert file_store.index is not None
    observer = file_store.index._observer
    assert observer is not None
    observer.stop()
    observer.join()
    (tmp_path / "jobs" / "c.json").write_text('{"job_id": "c", "job_status": "new"}')
    wait_for(lambda: ask(url).json()["response"] == {"a": "done", "c": "new"}, 5)


@pytest.mark.filesystem
def test_index_failing_falls_back_to_a_scan(
    file_store: FileStore,
    serve_service: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = serve_service(service_for(file_store))
    assert file_store.index is not None

    def broken(cutoff: float) -> Any:
        raise RuntimeError("index corrupted")

    monkeypatch.setattr(file_store.index, "window", broken)
    response = ask(url)
    assert response.status_code == 200 and response.json()["response"] == {"a": "done"}


class CorruptConnection:
    """Stands in for a connection to a corrupted file (SQLite caches pages,
    so scribbling on the file under an open connection is not seen at once)."""

    total_changes = 0  # an attribute of the connection, not a statement

    def execute(self, *args: Any) -> Any:
        raise sqlite3.DatabaseError("database disk image is malformed")


@pytest.mark.sqlite
def test_corrupted_sqlite_is_500_then_recovers(
    tmp_path: Path, serve_service: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "a", "job_status": "done"})
    url = serve_service(service_for(store))
    monkeypatch.setattr(store, "_conn", CorruptConnection())
    for job_id, what in (("a", "job status"), (None, "job statuses")):
        failed = ask(url, job_id)
        assert failed.status_code == 500
        assert failed.json()["message"] == (
            f"Failed to retrieve {what}: SQLite error: database disk image is malformed"
        )
    monkeypatch.undo()
    assert ask(url).json()["response"] == {"a": "done"}
    store.close()


@pytest.mark.sqlite
def test_reads_go_on_while_another_process_holds_the_write_lock(
    tmp_path: Path, serve_service: Callable[..., str]
) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path, busy_timeout=0.05)
    store.put({"job_id": "a", "job_status": "done"})
    url = serve_service(service_for(store))
    ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        ready.set()
        release.wait(10)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    ready.wait()
    try:
        assert ask(url, "a").status_code == 200  # WAL: readers never wait for writers
        assert ask(url).status_code == 200
        with pytest.raises(StoreError, match="database is locked"):
            store.put({"job_id": "b", "job_status": "done"})
    finally:
        release.set()
        holder.join()
    store.put({"job_id": "b", "job_status": "done"})
    assert ask(url, "b").status_code == 200
    store.close()


@pytest.mark.core
def test_a_value_no_answer_can_be_made_of_is_the_envelopes_500(
    serve_service: Callable[..., str],
) -> None:
    """Rows a store gave wrong (a status that is not JSON text, a time that
    is not a number: a store's bug, injected here) fail where the answer is
    written, past the store's call: still the contract's one-line 500, worded
    for one job or many, on both adapters, and the next request is served."""
    from dataclasses import replace

    from jobstatus_backends import store_from_url
    from jobstatus_core import Query, Row
    from jobstatus_core.wrapping import StoreWrapper, wrap

    class BareStatuses(StoreWrapper):
        def page(self, query: Query) -> list[Row]:
            return [replace(row, status="done") for row in self.inner.page(query)]

        def read(self, job_id: str) -> Row | None:
            row = self.inner.read(job_id)
            return None if row is None else replace(row, updated_at="now")  # type: ignore[arg-type]

    inner = store_from_url("memory://")
    inner.put({"job_id": "a", "job_status": "done"})
    store = wrap(inner, BareStatuses)
    url = serve_service(service_for(store))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        failed = http.get("/v1/jobs")
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/json"
        body = failed.json()
        assert body["endpoint"] == "/v1/jobs" and body["response"] is None
        assert body["message"] == "Failed to retrieve job statuses: JSONDecodeError"
        one = http.get("/v1/job/a").json()
        assert one["message"] == "Failed to retrieve job status: TypeError"
        assert (one["code"], one["job_id"]) == (500, "a")
        # A feed fails before its head is sent: answered as one (WSGI serves
        # no feeds).
        events = http.get("/v1/jobs/events", timeout=10).json()
        assert events["message"] in (
            "Failed to retrieve job statuses: JSONDecodeError",
            "Not implemented: event streams need the ASGI adapter",
        )
        served = http.post(JOB_STATUS_PATH, json={"job_id": "a"})
        assert served.status_code == 200


#: Requests sent at once to a store whose server hangs. The calls of a
#: loop's turn run one after another on a store thread: each waited the
#: store's timeout, so the last of them waited 40 (20 s at 0.5 s).
AT_ONCE = 40
#: Generous for a busy machine; far below 40 timeouts.
ANSWERED_WITHIN_SECONDS = 8.0


def _hung_redis(port: int) -> Store:
    """A client given by the host: the Redis store then reads on threads."""
    import redis

    from jobstatus_backends.redis import RedisStore

    client = redis.Redis(
        port=port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=None
    )
    return RedisStore(client=client, timeout=0.5)


def _hung_postgres(port: int) -> Store:
    from jobstatus_backends.postgres import PostgresStore

    return PostgresStore(f"postgresql://u:p@127.0.0.1:{port}/db", timeout=0.5)


@pytest.mark.parametrize(
    "opened",
    [
        pytest.param(_hung_redis, marks=pytest.mark.redis),
        pytest.param(_hung_postgres, marks=pytest.mark.postgres),
    ],
    ids=["redis", "postgres"],
)
def test_requests_at_once_to_a_hung_server_are_503_within_about_its_timeout(
    opened: Callable[[int], Store], serve: Callable[[Any], str]
) -> None:
    import asyncio
    import socket
    import time

    from jobstatus_adapters.starlette import create_app

    with socket.socket() as hung:  # accepts connections, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(AT_ONCE * 4)
        store = opened(hung.getsockname()[1])
        base = serve(create_app(service_for(store)))

        async def at_once(path: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=base,
                headers={"x-api-key": API_KEY},
                limits=httpx.Limits(max_connections=AT_ONCE),
                timeout=60,
            ) as http:
                return await asyncio.gather(*(http.get(path) for _ in range(AT_ONCE)))

        try:
            # A page and the readiness probe are read on store threads.
            for path in ("/v1/jobs?limit=1", "/readyz"):
                started = time.monotonic()
                answers = asyncio.run(at_once(path))
                elapsed = time.monotonic() - started
                assert {a.status_code for a in answers} == {503}, path
                assert {a.json()["message"] for a in answers} == {
                    "Job store unavailable"
                }
                assert elapsed < ANSWERED_WITHIN_SECONDS, (path, elapsed)
        finally:
            hung.close()  # first: a connection attempt then ends at once
            store.close()
