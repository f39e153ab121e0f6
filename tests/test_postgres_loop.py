"""PostgreSQL reads on the event loop: psycopg's asyncio pools, one per loop,
awaited by the Starlette adapter instead of a thread hop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.types import ASGIApp

from jobstatus_adapters.starlette import create_app
from jobstatus_backends.postgres import PostgresStore
from jobstatus_core import StoreUnavailable, TriesInline, WouldBlock, nowait

from .helpers import API_KEY, asgi_post_job, post_job, service_for, store_threads

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(postgres_server: Any) -> Iterator[PostgresStore]:
    """A PostgreSQL store of its own (a fresh schema) holding job ``a``, done."""
    store = PostgresStore(postgres_server.url, schema=f"t_{uuid.uuid4().hex[:12]}")
    store.put({"job_id": "a", "job_status": "done", "n": 1})
    yield store
    store.close()


def test_postgres_reads_on_the_loop_await_psycopg_asyncio(
    pg_store: PostgresStore, serve: Callable[[ASGIApp], str]
) -> None:
    assert isinstance(pg_store, TriesInline)
    app = create_app(service_for(pg_store))
    url = serve(app)
    threads = store_threads(app)
    key = {"x-api-key": API_KEY}
    before = threads.calls
    assert post_job(url, "a").json()["response"] == {
        "job_id": "a",
        "job_status": "done",
        "n": 1,
    }
    assert post_job(url, "nope").status_code == 404  # its tombstone looked up
    many = httpx.post(url + "/v1/toolkit/jobs/status", json={}, headers=key)
    assert many.json()["response"] == {"a": "done"}
    one = httpx.get(url + "/v1/job/a", headers=key)
    assert one.status_code == 200 and one.headers["etag"]
    page = httpx.get(url + "/v1/jobs", params={"counts": "true"}, headers=key)
    assert [job["job_id"] for job in page.json()["response"]["jobs"]] == ["a"]
    # A window's page and counts: their cutoff, taken again by each attempt,
    # does not name the fetch.
    recent = {"counts": "true", "since_seconds": "3600"}
    page = httpx.get(url + "/v1/jobs", params=recent, headers=key).json()["response"]
    assert [job["job_id"] for job in page["jobs"]] == ["a"]
    assert page["counts"] == {"done": 1}
    metrics = httpx.get(url + "/metrics", headers=key).text
    assert 'jobstatus_jobs{status="done"} 1.0' in metrics  # the kept counts
    assert threads.calls == before, "every read above awaited on the loop"


def test_a_read_on_the_loop_fails_as_on_a_thread(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("connection refused (injected)")

    async def read_on_the_loop() -> None:
        fetched: dict[Any, nowait.Outcome] = {}
        with pytest.raises(WouldBlock) as asked, nowait.attempt(fetched):
            pg_store.read("a")
        assert asked.value.fetch is not None
        assert await asked.value.fetch() != []  # the real round trip: rows
        # The fault: the round trip fails; the store maps it on the next try.
        monkeypatch.setattr(psycopg.AsyncConnection, "execute", unreachable)
        try:
            await asked.value.fetch()
        except psycopg.OperationalError as exc:
            fetched[asked.value.key] = (False, exc)
        with (
            pytest.raises(StoreUnavailable, match="PostgreSQL unreachable"),
            nowait.attempt(fetched),
        ):
            pg_store.read("a")
        # Not PostgreSQL's failure (the loop going away): to a thread.
        fetched[asked.value.key] = (False, RuntimeError("loop closed"))
        with pytest.raises(WouldBlock, match="failed"), nowait.attempt(fetched):
            pg_store.read("a")

    asyncio.run(read_on_the_loop())


def test_writes_and_set_up_never_run_on_the_loop(postgres_server: Any) -> None:
    store = PostgresStore(postgres_server.url, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        # Not set up yet: the schema check (a migration, under a lock) is a
        # thread's, and so is every write.
        with pytest.raises(WouldBlock, match="schema"), nowait.attempt():
            store.read("a")
        with pytest.raises(WouldBlock, match="threads"), nowait.attempt():
            store.put({"job_id": "a", "job_status": "done"})
        assert store.read("a") is None  # on a thread: sets up, then reads
        store.close()
        # A closed store's refusal is the thread's too.
        with pytest.raises(WouldBlock), nowait.attempt():
            store.read("a")
    finally:
        store.close()


def test_many_reads_at_once_on_one_loop_all_answer(pg_store: PostgresStore) -> None:
    app = create_app(service_for(pg_store))
    pg_store.read("a")  # set up on this thread first

    async def burst() -> set[int]:
        # Far more than the loop's pool holds (10 connections) at once.
        answers = await asyncio.gather(*(asgi_post_job(app, "a") for _ in range(300)))
        return {sent[0]["status"] for sent in answers}

    assert asyncio.run(burst()) == {200}
    # A second loop gets a pool of its own; the first, closed, is dropped.
    assert asyncio.run(burst()) == {200}
    assert len(pg_store._async._loops) == 1
    assert store_threads(app).calls == 0
