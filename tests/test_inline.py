"""Reads tried on the event loop (``TriesInline``), and the bound on how long
a slow disk can hold the loop: real stores, a real uvicorn server; faults
(a slow read, a file system without RWF_NOWAIT) injected with monkeypatch."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.types import ASGIApp

from jobstatus_adapters.offload import StoreThreads
from jobstatus_adapters.starlette import StatusApp, create_app
from jobstatus_backends import jobfiles
from jobstatus_backends import sqlite as sqlite_backend
from jobstatus_backends.breaker import Breaker
from jobstatus_backends.filesystem import FileStore, WatchedFileStore
from jobstatus_backends.redis import RedisStore
from jobstatus_backends.sqlite import SQLiteStore
from jobstatus_core import (
    StoreUnavailable,
    TriesInline,
    WouldBlock,
    cursor,
    nowait,
    tokens,
)
from jobstatus_core.contract import OPERATIONS
from jobstatus_core.feed import Feed
from jobstatus_core.requests import Request
from jobstatus_core.waiting import Waiting
from jobstatus_core.wrapping import StoreWrapper, wrap

from .helpers import API_KEY, free_port, service_for, start_redis, until

JOB = "/v1/toolkit/job/status"
JOBS = "/v1/toolkit/jobs/status"
#: Far above any answer from a loop that is not stalled (even on a busy
#: machine), far below the delay injected into the slow read: only a
#: stalled loop crosses it.
SLOW_READ_SECONDS = 10.0
PROMPT_SECONDS = 5.0
#: An inline-read budget no read on a loaded machine reaches: the default
#: (10 ms) is crossed by one preemption, after which every inline call is
#: refused for 5 s. For tests that are not about the breaker.
LAVISH_BUDGET = 60.0
#: Tries at evicting a file that the index's observer may read back in.
EVICTIONS = 50


def store_threads(app: Any) -> StoreThreads:
    assert isinstance(app, StatusApp)
    return app.threads


def evict(path: Path) -> None:
    """Flush the file and drop its pages from the page cache. (Not checked
    here with a RWF_NOWAIT read: a refused one starts reading the file in.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def post_job(url: str, job_id: str) -> httpx.Response:
    return httpx.post(
        url + JOB, json={"job_id": job_id}, headers={"x-api-key": API_KEY}, timeout=30
    )


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileStore]:
    store = FileStore.open(tmp_path)
    assert isinstance(store, WatchedFileStore)
    # A budget no read on a loaded machine reaches: the breaker has its own
    # tests; here an inline attempt is refused only by the page cache.
    store._breaker = Breaker(budget=LAVISH_BUDGET)
    yield store
    store.close()


@pytest.mark.core
def test_a_breaker_pauses_inline_calls_after_one_over_its_budget() -> None:
    now = [100.0]
    breaker = Breaker(budget=0.002, cooldown=5.0, clock=lambda: now[0])
    with breaker.timed():
        now[0] += 0.001
    assert breaker.allows() and breaker.trips == 0
    with breaker.timed():
        now[0] += 0.5  # a slow call is not stopped: it ends late
    assert breaker.trips == 1 and not breaker.allows()
    with pytest.raises(WouldBlock), breaker.timed():
        pass
    now[0] += 5.0
    assert breaker.allows()


@pytest.mark.core
def test_nowait_is_asked_only_inside_an_attempt() -> None:
    assert not nowait.asked()
    with nowait.attempt():
        assert nowait.asked()
        seen: list[bool] = []
        other = threading.Thread(target=lambda: seen.append(nowait.asked()))
        other.start()
        other.join()
        assert seen == [False], "a worker thread reads the ordinary way"
    assert not nowait.asked()


class Counting(StoreWrapper):
    """A wrapper as a host writes one."""


@pytest.mark.filesystem
def test_only_the_indexed_file_store_tries_inline(tmp_path: Path) -> None:
    indexed = FileStore.open(tmp_path)
    scanning = FileStore.open(tmp_path, index=False)
    try:
        assert isinstance(indexed, TriesInline)
        assert isinstance(wrap(indexed, Counting), TriesInline)
        assert not isinstance(scanning, TriesInline)
        scanning.put({"job_id": "a", "job_status": "done"})
        with pytest.raises(WouldBlock), nowait.attempt():
            scanning.read("a")  # would scan the directory: on a thread
        assert scanning.read("a") is not None
    finally:
        indexed.close()
        scanning.close()


@pytest.mark.filesystem
def test_a_file_out_of_the_page_cache_is_not_read_inline(files: FileStore) -> None:
    files.put({"job_id": "a", "job_status": "done"})
    # The index's observer reads the new file too, and may bring it back
    # into the cache after an eviction: evict until a read sees it gone.
    for _ in range(EVICTIONS):
        evict(Path(files.jobs_dir, "a.json"))
        try:
            with nowait.attempt():
                files.read("a")
        except WouldBlock as refused:
            assert "page cache" in str(refused)
            return
        time.sleep(0.1)
    pytest.fail("an evicted file was read inline every time")


@pytest.mark.filesystem
def test_a_half_written_file_is_read_again_on_a_thread(files: FileStore) -> None:
    files.put({"job_id": "a", "job_status": "done"})
    Path(files.jobs_dir, "a.json").write_text('{"job_id": "a", "job_st')
    with pytest.raises(WouldBlock), nowait.attempt():
        files.read("a")  # never sleeps on the loop before reading it again
    with pytest.raises(jobfiles.UnreadableRecord):
        files.read("a")


@pytest.mark.filesystem
def test_a_file_system_without_rwf_nowait_stops_inline_reads_for_good(
    files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.put({"job_id": "a", "job_status": "done"})
    calls: list[int] = []

    def unsupported(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        calls.append(flags)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "preadv", unsupported)
    for _ in range(3):
        with pytest.raises(WouldBlock), nowait.attempt():
            files.read("a")
    assert calls == [os.RWF_NOWAIT], "one probe, then no more attempts"
    found = files.read("a")
    assert found is not None and found.record["job_status"] == "done"


@pytest.mark.filesystem
def test_an_evicted_job_file_is_answered_from_a_store_thread(
    files: FileStore, serve: Callable[[ASGIApp], str]
) -> None:
    files.put({"job_id": "cold", "job_status": "done"})
    files.put({"job_id": "warm", "job_status": "running"})
    app = create_app(service_for(files))
    url = serve(app)
    threads = store_threads(app)
    assert post_job(url, "warm").json()["response"]["job_status"] == "running"
    inline_calls = threads.calls
    assert post_job(url, "warm").json()["response"]["job_status"] == "running"
    assert threads.calls == inline_calls, "a cached file is read on the loop"
    # As above: evicted until a read goes to a thread (the observer may
    # read the file back in); every answer is right either way.
    for _ in range(EVICTIONS):
        evict(Path(files.jobs_dir, "cold.json"))
        answer = post_job(url, "cold")
        assert answer.status_code == 200
        assert answer.json()["response"] == {"job_id": "cold", "job_status": "done"}
        if threads.calls > inline_calls:
            break
        time.sleep(0.1)
    assert threads.calls == inline_calls + 1, "the evicted file: on a thread"


@pytest.mark.filesystem
def test_a_slow_read_on_a_thread_does_not_stall_the_loop(
    files: FileStore,
    serve: Callable[[ASGIApp], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files.put({"job_id": "cold", "job_status": "done"})
    files.put({"job_id": "warm", "job_status": "running"})
    url = serve(create_app(service_for(files)))
    assert post_job(url, "warm").status_code == 200
    ordinary_cached = jobfiles._read_cached

    def uncached(fd: int, size: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("cold.json"):
            raise WouldBlock("the job file is not in the page cache")
        return ordinary_cached(fd, size)

    # "cold" out of the page cache (the test above evicts for real).
    monkeypatch.setattr(jobfiles, "_read_cached", uncached)
    reading = threading.Event()
    ordinary_read = jobfiles._read_to_end

    def slow_read(fd: int, size: int, max_size: int) -> bytes | None:
        reading.set()
        time.sleep(SLOW_READ_SECONDS)  # a stalled disk
        return ordinary_read(fd, size, max_size)

    monkeypatch.setattr(jobfiles, "_read_to_end", slow_read)
    answers: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: answers.append(post_job(url, "cold")))
    slow.start()
    try:
        assert reading.wait(10), "the evicted file went to the thread path"
        started = time.monotonic()
        health = httpx.get(url + "/healthz", timeout=30)
        other = post_job(url, "warm")
        took = time.monotonic() - started
    finally:
        slow.join(30)
    assert health.status_code == 200
    assert other.json()["response"] == {"job_id": "warm", "job_status": "running"}
    assert took < PROMPT_SECONDS, f"the loop waited on the slow read ({took:.2f} s)"
    assert answers[0].json()["response"] == {"job_id": "cold", "job_status": "done"}


@pytest.mark.sqlite
def test_a_slow_inline_sqlite_read_sends_the_next_reads_to_threads(
    tmp_path: Path,
    serve: Callable[[ASGIApp], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store.put({"job_id": "a", "job_status": "done"})
    # A budget no ordinary read reaches on a loaded machine, crossed by the
    # injected stall alone (a sleep lasts at least as long as it is asked);
    # the file looked at on every read.
    store._breaker = Breaker(budget=PROMPT_SECONDS, cooldown=60.0)
    monkeypatch.setattr(sqlite_backend, "INLINE_FILE_CHECK_SECONDS", 0.0)
    app = create_app(service_for(store))
    url = serve(app)
    threads = store_threads(app)
    try:
        assert post_job(url, "a").status_code == 200
        before = threads.calls
        assert post_job(url, "a").status_code == 200
        assert threads.calls == before, "read on the loop"
        ordinary = sqlite_backend._identity

        def stalled(path: Path) -> tuple[int, int] | None:
            time.sleep(PROMPT_SECONDS + 0.5)  # a stat on a stalled disk, on the loop
            return ordinary(path)

        monkeypatch.setattr(sqlite_backend, "_identity", stalled)
        answer = post_job(url, "a").json()["response"]
        assert answer == {"job_id": "a", "job_status": "done"}
        assert store._breaker.trips == 1
        assert threads.calls == before, "the slow read itself ran on the loop"
        monkeypatch.setattr(sqlite_backend, "_identity", ordinary)
        for n in range(1, 4):
            assert post_job(url, "a").status_code == 200
            assert threads.calls == before + n, "cooling down: on threads"
        assert store._breaker.trips == 1
    finally:
        store.close()


@pytest.mark.sqlite
def test_inline_sqlite_reads_notice_a_replaced_file_within_a_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store._breaker = Breaker(budget=LAVISH_BUDGET)  # refused only as replaced
    try:
        store.put({"job_id": "old", "job_status": "done"})
        with nowait.attempt():
            assert store.read("old") is not None
        restored = SQLiteStore(tmp_path / "backup.db")
        restored.put({"job_id": "new", "job_status": "restored"})
        restored.close()
        os.replace(tmp_path / "backup.db", path)
        # Within the interval an inline read may still see the old file
        # (whole, never mixed); after it, the read goes to a thread ...
        time.sleep(sqlite_backend.INLINE_FILE_CHECK_SECONDS)
        with pytest.raises(WouldBlock, match="replaced"), nowait.attempt():
            store.read("new")
        # ... which reopens the file now at the path, at once.
        assert store.read("new") is not None and store.read("old") is None
        with nowait.attempt():
            assert store.read("new") is not None
    finally:
        store.close()


@pytest.mark.sqlite
def test_inline_sqlite_reads_never_wait_and_threads_wait_again(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store._breaker = Breaker(budget=LAVISH_BUDGET)  # never paused, nor interrupted

    def busy_timeout() -> int:
        return int(store._conn.execute("PRAGMA busy_timeout").fetchone()[0])

    try:
        store.put({"job_id": "a", "job_status": "done"})
        with nowait.attempt():
            assert store.read("a") is not None
            # Left at 0 between inline calls (set once per run of them) ...
            assert store._run(busy_timeout) == 0
        # ... and a call on a thread waits for locks again.
        assert store._run(busy_timeout) == 5000
        with nowait.attempt():
            assert store._run(busy_timeout) == 0
    finally:
        store.close()


@pytest.mark.sqlite
def test_after_inline_reads_a_replaced_file_is_still_emptied_patiently(
    tmp_path: Path,
) -> None:
    """The old file's WAL is checkpointed, waiting for its readers, before
    the new file is opened: else the new one is read through the old WAL."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store._breaker = Breaker(budget=LAVISH_BUDGET)  # never paused, nor interrupted
    try:
        store.put({"job_id": "old", "job_status": "done"})
        with nowait.attempt():
            assert store.read("old") is not None  # the connection waits not
        # Another connection reads the old file for a moment.
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM jobs").fetchone()
        ends = threading.Timer(0.3, lambda: reader.execute("COMMIT"))
        ends.start()
        restored = SQLiteStore(tmp_path / "backup.db")
        restored.put({"job_id": "new", "job_status": "restored"})
        restored.close()
        os.replace(tmp_path / "backup.db", path)
        # On a thread: reopens the file now at the path, old WAL emptied.
        assert store.read("new") is not None and store.read("old") is None
        ends.join()
        reader.close()
    finally:
        store.close()


@pytest.mark.sqlite
def test_a_long_inline_sqlite_statement_is_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        store.put({"job_id": "a", "job_status": "done"})
        store._breaker = Breaker(budget=0.05)
        long = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
            " WHERE i < 100000000) SELECT max(i) FROM n"
        )
        with pytest.raises(WouldBlock, match="interrupted"), nowait.attempt():
            store._run(lambda: store._conn.execute(long).fetchone())
        assert store._breaker.trips == 1
        assert store.read("a") is not None
    finally:
        store.close()


@pytest.mark.filesystem
def test_the_expiring_file_store_reads_its_tombstones_on_threads(
    tmp_path: Path,
) -> None:
    store = FileStore.open(tmp_path, expire="delete")
    try:
        store.put({"job_id": "a", "job_status": "done"})
        assert isinstance(store, TriesInline)
        for call in (lambda: store.tombstones(["a"]), store.mark):
            with pytest.raises(WouldBlock), nowait.attempt():
                call()
        assert store.tombstones(["a"]) == {}
    finally:
        store.close()


@pytest.mark.sqlite
def test_an_inline_sqlite_read_never_waits_for_the_connection(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    store._breaker = Breaker(budget=LAVISH_BUDGET)  # refused only as in use
    try:
        store.put({"job_id": "a", "job_status": "done"})
        # A thread's call holds the connection.
        with store._lock, pytest.raises(WouldBlock, match="in use"), nowait.attempt():
            store.read("a")
        with nowait.attempt():
            assert store.read("a") is not None
    finally:
        store.close()


@pytest.fixture
def redis_store(redis_server: Any) -> Iterator[RedisStore]:
    """A Redis store of its own (a fresh prefix) holding job ``a``, done."""
    store = RedisStore(redis_server.url, prefix=f"inline-{time.time_ns()}:")
    store.put({"job_id": "a", "job_status": "done", "n": 1})
    yield store
    store.close()


async def asgi_call(
    app: ASGIApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A request through ``app`` in this task, without a server, with the
    API key: the messages it sends."""
    sent_headers = {"x-api-key": API_KEY, **(headers or {})}
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in sent_headers.items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def asgi_post_job(app: ASGIApp, job_id: str) -> list[dict[str, Any]]:
    """``job/status`` through ``app`` in this task: the messages sent."""
    body = json.dumps({"job_id": job_id}).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    return await asgi_call(app, "POST", JOB, body, headers)


@pytest.mark.redis
def test_redis_reads_on_the_loop_await_the_loops_pipe(
    redis_store: RedisStore, serve: Callable[[ASGIApp], str]
) -> None:
    app = create_app(service_for(redis_store))
    url = serve(app)
    threads = store_threads(app)
    key = {"x-api-key": API_KEY}
    # The layout check (once per store instance) runs on a thread.
    httpx.get(url + "/v1/job/a", headers=key)
    before = threads.calls
    assert post_job(url, "a").json()["response"] == {
        "job_id": "a",
        "job_status": "done",
        "n": 1,
    }
    assert post_job(url, "nope").status_code == 404
    many = httpx.post(url + "/v1/toolkit/jobs/status", json={}, headers=key)
    assert many.json()["response"] == {"a": "done"}
    one = httpx.get(url + "/v1/job/a", headers=key)
    assert one.status_code == 200 and one.headers["etag"]
    # Not there: its tombstone looked up (none), on the loop too.
    assert httpx.get(url + "/v1/job/nope", headers=key).status_code == 404
    metrics = httpx.get(url + "/metrics", headers=key).text
    assert 'jobstatus_jobs{status="done"} 1.0' in metrics  # the kept counts
    assert threads.calls == before, "every read above awaited on the loop"
    # A call without an asyncio twin (a page) goes to a thread, whole.
    page = httpx.get(url + "/v1/jobs", headers=key)
    assert [job["job_id"] for job in page.json()["response"]["jobs"]] == ["a"]
    assert threads.calls > before


@pytest.mark.redis
def test_a_redis_read_on_the_loop_fails_as_on_a_thread() -> None:
    import asyncio

    import redis

    # The fault: nothing listens where the store connects.
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")

    async def read_on_the_loop() -> None:
        fetched: dict[Any, nowait.Outcome] = {}
        with pytest.raises(WouldBlock) as asked, nowait.attempt(fetched):
            store.get("a")
        assert asked.value.fetch is not None
        with pytest.raises(redis.ConnectionError) as failed:
            await asked.value.fetch()
        fetched[asked.value.key] = (False, failed.value)
        # The store maps it on the next try, as the sync client's.
        with (
            pytest.raises(StoreUnavailable, match="Redis unreachable"),
            nowait.attempt(fetched),
        ):
            store.get("a")

    try:
        asyncio.run(read_on_the_loop())
    finally:
        store.close()


def answered(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """Status and envelope of an answer, its timings left out."""
    body = json.loads(sent[1]["body"])
    return sent[0]["status"], {
        k: v for k, v in body.items() if k not in ("run_time", "total_time")
    }


def handled(reply: Any) -> tuple[int, dict[str, Any]]:
    """``answered`` for what a handler returned: a reply, not a wait."""
    assert not isinstance(reply, (Waiting, Feed))
    return answered([{"status": reply.status}, {"body": reply.body}])


def fresh_id_left_out(answer: tuple[int, dict[str, Any]]) -> Any:
    """An answer without its envelope's ``job_id``: a listing's or a
    page's names a new request id each time."""
    return answer[0], {k: v for k, v in answer[1].items() if k != "job_id"}


def read_by_the_handler(*args: Any) -> None:
    """The fault the loop's tests inject in a store read its handler makes."""
    raise AssertionError("read by the handler on the loop")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A redis-server of the test's own, and a plain client of it, for the
    faults no store would make."""
    import redis

    server = start_redis(tmp_path)
    raw = redis.Redis.from_url(server.url)
    try:
        yield server.url, raw
    finally:
        raw.close()
        server.stop()


@pytest.mark.redis
def test_redis_job_status_on_the_loop_reads_once_and_answers_as_the_handler(
    own_redis: tuple[str, Any],
) -> None:
    """On the loop, ``job/status`` on Redis is made of its ``OneRead``: the
    body read once, the round trip awaited, the answer made once — the
    handler's own read (``read_text``), refused on the loop and made again
    after its round trip, is not made at all; and the answers are the
    handler's, byte for byte but the timings: found, missing, and a Redis
    error (a job key of the wrong type)."""
    url, raw = own_redis
    store = RedisStore.from_url(url + "?prefix=loop:")
    store.put({"job_id": "a", "job_status": "done", "response": {"n": [1, "é"]}})
    raw.hset("loop:job:wrong", "not", "a string")
    service = service_for(store)
    app = create_app(service)
    operation = next(op for op in OPERATIONS if op.name == "toolkit_job_status")

    def by_handler(job_id: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"job_id": job_id}).encode()
        return handled(service.handle(operation, Request(JOB, "POST", {}, body)))

    def not_on_the_loop(job_id: str) -> None:
        raise AssertionError(f"read_text({job_id!r}) called on the loop")

    try:
        expected = {job_id: by_handler(job_id) for job_id in ("a", "nope", "wrong")}
        assert [status for status, _ in expected.values()] == [200, 404, 500]
        # The fault: the handler's read fails any request it serves.
        store.read_text = not_on_the_loop  # type: ignore[method-assign]
        before = store_threads(app).calls
        for job_id, answer in expected.items():
            assert answered(asyncio.run(asgi_post_job(app, job_id))) == answer
        assert store_threads(app).calls == before
    finally:
        store.close()


@pytest.mark.redis
def test_redis_get_job_on_the_loop_reads_once_and_answers_as_the_handler(
    own_redis: tuple[str, Any],
) -> None:
    """``GET /v1/job/{id}`` on Redis, on the loop, from its ``OneRead``: a
    job found (and its ETag current: 304) or a Redis error answered from
    one awaited read, never the handler's; a job not there answered by the
    handler, which looks for its tombstone (404, or 410 for one expired).
    Every answer the handler's, but the timings."""
    url, raw = own_redis
    store = RedisStore.from_url(url + "?prefix=get:")
    store.put({"job_id": "a", "job_status": "done", "n": 1})
    store.put({"job_id": "old", "job_status": "done"})
    store.expire([store.read("old")], at=1000.0)  # type: ignore[list-item]
    raw.hset("get:job:wrong", "not", "a string")
    service = service_for(store)
    app = create_app(service)
    operation = next(op for op in OPERATIONS if op.name == "get_job")
    etag = store.read("a").version  # type: ignore[union-attr]
    current = {"if-none-match": f'"{etag}"'}

    def by_handler(job_id: str, headers: dict[str, str]) -> tuple[int, Any]:
        request = Request(
            f"/v1/job/{job_id}", "GET", headers, path_params={"job_id": job_id}
        )
        reply = service.handle(operation, request)
        assert not isinstance(reply, (Waiting, Feed))
        return (
            reply.status,
            dict(reply.headers),
            reply.body and answered([{"status": reply.status}, {"body": reply.body}]),
        )

    def on_the_loop(job_id: str, headers: dict[str, str]) -> tuple[int, Any]:
        sent = asyncio.run(asgi_call(app, "GET", f"/v1/job/{job_id}", b"", headers))
        named = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
        named.pop("content-length")
        body = sent[1].get("body", b"")
        return sent[0]["status"], named, body and answered(sent)

    def not_on_the_loop(job_id: str) -> None:
        raise AssertionError(f"read_text({job_id!r}) called on the loop")

    try:
        one_read = [("a", {}), ("a", current), ("wrong", {})]
        handled = [("nope", {}), ("old", {})]
        expected = {
            (job_id, str(headers)): by_handler(job_id, headers)
            for job_id, headers in one_read + handled
        }
        assert [answer[0] for answer in expected.values()] == [200, 304, 500, 404, 410]
        before = store_threads(app).calls
        for job_id, headers in handled:
            assert on_the_loop(job_id, headers) == expected[job_id, str(headers)]
        # The fault: the handler's read fails any request it serves.
        store.read_text = not_on_the_loop  # type: ignore[method-assign]
        for job_id, headers in one_read:
            assert on_the_loop(job_id, headers) == expected[job_id, str(headers)]
        assert store_threads(app).calls == before
    finally:
        store.close()


@pytest.mark.redis
def test_redis_jobs_status_on_the_loop_answers_a_kept_listing_from_the_mark(
    own_redis: tuple[str, Any],
) -> None:
    """``jobs/status`` on Redis, on the loop, from its ``OneRead``: while the
    listing the last request read is kept and the store's mark has not
    moved, the answer is made from the mark awaited alone — neither the
    handler's mark nor the window is read; a write moves the mark, and the
    next request's handler reads the new listing from the mark awaited; a
    failing mark answers as the handler does."""
    url, raw = own_redis
    store = RedisStore.from_url(url + "?prefix=list:")
    store.put({"job_id": "a", "job_status": "done"})
    service = service_for(store)
    app = create_app(service)
    operation = next(op for op in OPERATIONS if op.name == "toolkit_jobs_status")
    body = json.dumps({"since_seconds": 3600}).encode()

    def on_the_loop() -> Any:
        sent = asyncio.run(asgi_call(app, "POST", JOBS, body))
        return fresh_id_left_out(answered(sent))

    def by_handler() -> Any:
        reply = service.handle(operation, Request(JOBS, "POST", {}, body))
        return fresh_id_left_out(handled(reply))

    read_mark, read_window = store.mark, store.window
    try:
        first = on_the_loop()  # not kept yet: the handler reads and keeps it
        assert first[0] == 200 and list(first[1]["response"]) == ["a"]
        # The fault: the handler's reads fail any request it serves.
        store.mark = store.window = read_by_the_handler  # type: ignore[method-assign, assignment]
        before = store_threads(app).calls
        assert on_the_loop() == first
        assert store_threads(app).calls == before
        store.window = read_window  # type: ignore[method-assign]
        store.put({"job_id": "b", "job_status": "running"})
        # Not kept under the moved mark: the handler reads the window, from
        # the mark awaited (not read again).
        moved = on_the_loop()
        assert moved[0] == 200 and list(moved[1]["response"]) == ["a", "b"]
        assert store_threads(app).calls == before
        store.mark = read_mark  # type: ignore[method-assign]
        raw.delete("list:epoch")
        raw.hset("list:epoch", "not", "a string")  # the mark's GET: WRONGTYPE
        failed = by_handler()
        assert failed[0] == 500
        assert on_the_loop() == failed
    finally:
        store.close()


@pytest.mark.redis
def test_redis_get_jobs_on_the_loop_answers_a_kept_page_from_the_mark(
    own_redis: tuple[str, Any],
) -> None:
    """``GET /v1/jobs`` on Redis, on the loop, from its ``OneRead``: a page
    kept under the store's mark, and a cursor from another life of the
    store (410), are answered from the mark awaited alone — neither the
    handler's mark nor the page is read; a write moves the mark, and the
    next request's handler reads the new page from the mark awaited; a
    failing mark answers as the handler does."""
    url, raw = own_redis
    store = RedisStore.from_url(url + "?prefix=page:")
    store.put({"job_id": "a", "job_status": "done"})
    store.put({"job_id": "b", "job_status": "queued"})
    service = service_for(store)
    app = create_app(service)
    operation = next(op for op in OPERATIONS if op.name == "list_jobs")
    digest = cursor.filter_digest(None, None)
    elsewhere = service.encode_cursor(cursor.Cursor(1, "another-life"), digest)
    first_page, expired = "/v1/jobs?limit=1", f"/v1/jobs?cursor={elsewhere}"

    def on_the_loop(path: str) -> Any:
        return fresh_id_left_out(answered(asyncio.run(asgi_call(app, "GET", path))))

    def by_handler(path: str) -> Any:
        query = parse_qs(path.partition("?")[2])
        reply = service.handle(operation, Request("/v1/jobs", "GET", {}, b"", query))
        return fresh_id_left_out(handled(reply))

    read_mark, read_page = store.mark, store.page
    try:
        gone = by_handler(expired)
        assert gone[0] == 410
        first = on_the_loop(first_page)  # not kept yet: the handler keeps it
        assert first == by_handler(first_page)
        assert [job["job_id"] for job in first[1]["response"]["jobs"]] == ["a"]
        # The fault: the handler's reads fail any request it serves.
        store.mark = store.page = read_by_the_handler  # type: ignore[method-assign, assignment]
        before = store_threads(app).calls
        assert on_the_loop(first_page) == first
        assert on_the_loop(expired) == gone
        assert store_threads(app).calls == before
        store.page = read_page  # type: ignore[method-assign]
        store.put({"job_id": "a", "job_status": "failed"})
        # Not kept under the moved mark: the handler reads the page (its
        # scripts run on a thread), from the mark awaited (not read again).
        moved = on_the_loop(first_page)
        assert [job["job_id"] for job in moved[1]["response"]["jobs"]] == ["b"]
        assert store_threads(app).calls == before + 1
        store.mark = read_mark  # type: ignore[method-assign]
        assert moved == by_handler(first_page)
        raw.delete("page:epoch")
        raw.hset("page:epoch", "not", "a string")  # the mark's GET: WRONGTYPE
        failed = by_handler(first_page)
        assert failed[0] == 500
        assert on_the_loop(first_page) == failed
    finally:
        store.close()


@pytest.mark.redis
def test_redis_get_jobs_on_the_loop_never_answers_a_token_the_kept_page(
    own_redis: tuple[str, Any],
) -> None:
    """The API key's page kept under the mark, nothing written since: the
    same query with a token is answered its own jobs and counts, not the
    kept page, on the loop as by the handler."""
    url, _ = own_redis
    store = RedisStore.from_url(url + "?prefix=scoped:")
    for job_id, status in (("a", "done"), ("b", "failed"), ("c", "queued")):
        store.put({"job_id": job_id, "job_status": status})
    service = service_for(store)
    app = create_app(service)
    token = tokens.issue(["a", "c"], service.clock() + 60, service.secret)

    def jobs_and_counts(headers: dict[str, str]) -> Any:
        sent = asyncio.run(asgi_call(app, "GET", "/v1/jobs?counts=true", b"", headers))
        status, body = answered(sent)
        assert status == 200
        page = body["response"]
        return [job["job_id"] for job in page["jobs"]], page["counts"]

    try:
        whole = jobs_and_counts({})
        assert whole == (["a", "b", "c"], {"done": 1, "failed": 1, "queued": 1})
        assert jobs_and_counts({}) == whole  # kept
        scoped = jobs_and_counts({"authorization": f"Bearer {token}"})
        assert scoped == (["a", "c"], {"done": 1, "queued": 1})
    finally:
        store.close()


@pytest.mark.redis
def test_redis_job_status_is_read_on_a_thread_until_the_layout_is_checked(
    tmp_path: Path,
) -> None:
    """A store that has not yet checked its layout (a fresh instance on an
    existing database) refuses the read on the loop: the request is
    answered from a thread, which checks it, and the next from the loop."""
    import asyncio

    server = start_redis(tmp_path)
    RedisStore(server.url).put({"job_id": "a", "job_status": "done"})
    store = RedisStore(server.url)  # another instance: nothing checked yet
    app = create_app(service_for(store))
    try:
        before = store_threads(app).calls
        first = asyncio.run(asgi_post_job(app, "a"))
        assert store_threads(app).calls == before + 1
        second = asyncio.run(asgi_post_job(app, "a"))
        assert store_threads(app).calls == before + 1
        assert answered(first) == answered(second)
        assert answered(first)[1]["response"]["job_status"] == "done"
    finally:
        store.close()
        server.stop()


@pytest.mark.redis
def test_a_redis_connection_lost_under_a_read_on_the_loop_is_read_on_a_thread(
    tmp_path: Path,
) -> None:
    """As redis-py's sync client retries on a new connection, not a 503 for
    every request in flight when redis-server drops its clients."""
    import asyncio

    import redis

    server = start_redis(tmp_path)
    # A timeout the paused read never reaches, however late the loop: it
    # goes to a thread because its connection is killed, not timed out.
    store = RedisStore(server.url, timeout=10.0)
    store.put({"job_id": "a", "job_status": "done"})
    raw = redis.Redis.from_url(server.url)
    app = create_app(service_for(store))

    async def main() -> list[dict[str, Any]]:
        await asgi_post_job(app, "a")  # the layout checked, the pipe open
        # Holds the read's script in flight until unpaused after the kill (a
        # pause that ends by itself may end first on a busy machine).
        raw.client_pause(10000, all=False)
        try:
            read = asyncio.ensure_future(asgi_post_job(app, "a"))
            # Its script sent and held (the paused client is a blocked one)
            # before the kill, not the connection killed while idle.
            await until(
                lambda: any("b" in c["flags"] for c in raw.client_list("normal")), 5
            )
            raw.client_kill_filter(_type="normal", skipme=True)
        finally:
            raw.client_unpause()
        return await read

    try:
        before = store_threads(app).calls
        sent = asyncio.run(main())
        assert sent[0]["status"] == 200, sent
        assert json.loads(sent[1]["body"])["response"]["job_status"] == "done"
        assert store_threads(app).calls == before + 1
    finally:
        store.close()
        raw.close()
        server.stop()


@pytest.mark.redis
def test_under_trio_redis_reads_go_to_threads(redis_store: RedisStore) -> None:
    import anyio
    import trio  # noqa: F401 - the backend anyio runs below

    app = create_app(service_for(redis_store))
    sent = anyio.run(asgi_post_job, app, "a", backend="trio")
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["response"]["job_status"] == "done"
    assert store_threads(app).calls == 1  # asyncio's client cannot run here


def test_asyncio_is_told_from_trio_with_trio_imported() -> None:
    """Where a store's fetch may be awaited: asked of trio (its current
    task), never of asyncio's getpid()-making get_running_loop()."""
    import asyncio

    import trio

    from jobstatus_adapters.starlette import _on_asyncio

    async def asked() -> bool:
        return _on_asyncio()

    assert asyncio.run(asked()) is True
    assert trio.run(asked) is False


@pytest.mark.redis
def test_many_redis_reads_at_once_on_one_loop_all_answer(
    redis_store: RedisStore,
) -> None:
    import asyncio

    app = create_app(service_for(redis_store))

    async def burst() -> set[int]:
        # More at once than a connection pool would hold (100): one pipe.
        answers = await asyncio.gather(*(asgi_post_job(app, "a") for _ in range(300)))
        return {sent[0]["status"] for sent in answers}

    assert asyncio.run(burst()) == {200}
    # A second loop gets a client of its own; the first, closed, is dropped.
    assert asyncio.run(burst()) == {200}
    assert redis_store._async is not None
    assert len(redis_store._async._loops) == 1


@pytest.mark.redis
def test_the_layout_check_never_waits_on_the_loop(redis_server: Any) -> None:
    # A round trip's timeout far above the bound below: a read that waited
    # for the lock, even only as long as a thread may hold it, would show.
    store = RedisStore(
        redis_server.url, prefix=f"inline-{time.time_ns()}:", timeout=30.0
    )
    try:
        store.put({"job_id": "a", "job_status": "done", "n": 1})
        store._upgraded = False
        # A thread holds the lock, checking the layout (slow Redis, say).
        with store._upgrade_lock:
            started = time.monotonic()
            with pytest.raises(WouldBlock, match="layout"), nowait.attempt():
                store.read("a")
            assert time.monotonic() - started < PROMPT_SECONDS
        assert store.read("a") is not None  # on a thread: checks, then reads
    finally:
        store.close()


@pytest.mark.redis
def test_a_read_refused_on_the_loop_leaves_no_garbage_cycle(
    redis_store: RedisStore,
) -> None:
    """A ``WouldBlock`` carries a traceback of the frames it left: held by one
    of them, it makes a cycle per request that only the garbage collector
    frees — whose full passes then cost more than the read (docs/performance.md)."""
    import asyncio
    import gc

    app = create_app(service_for(redis_store))

    async def requests() -> None:
        for _ in range(10):
            sent = await asgi_post_job(app, "a")
            assert sent[0]["status"] == 200

    asyncio.run(requests())  # the clients, scripts and pools made once
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(requests())
        gc.collect()
        left = [each for each in gc.garbage if isinstance(each, WouldBlock)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
