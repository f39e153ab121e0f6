"""Proofs read once per turn of the event loop (``turnmemo``; on Redis, one
round trip for a read asked again before the pipe writes it): shared by the
requests of one turn, never by a request sent after a write it could see."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from jobstatus_adapters.starlette import create_app
from jobstatus_backends import turnmemo
from jobstatus_backends.breaker import Breaker
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.redis import RedisStore
from jobstatus_backends.sqlite import SQLiteStore
from jobstatus_backends.turnmemo import TurnMemo
from jobstatus_core import Mark, Store, Window, nowait

from .helpers import (
    API_KEY,
    LiveServer,
    RedisServer,
    attempted_on_the_loop,
    read_on_the_loop,
    service_for,
)

JOB = "/v1/toolkit/job/status"
#: An inline-read budget no read on a loaded machine reaches: the default
#: (10 ms) is crossed by one preemption, after which every inline call is
#: refused for 5 s. For tests that are not about the breaker.
LAVISH_BUDGET = 60.0
#: Writes, each followed by a poll that must see it, under other polls' load.
WRITES = 50
POLLERS = 12


class Reads:
    """A value read from the world, counting the reads."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        return self.count


def in_attempt(memo: TurnMemo[str, int], read: Callable[[], int]) -> int:
    with nowait.attempt():  # as the adapter tries a read on the loop
        return memo.value("k", read)


T = TypeVar("T")


async def together(*reads: Callable[[], T]) -> list[T]:
    """Each in a task of its own, all scheduled in one turn."""

    async def run(read: Callable[[], T]) -> T:
        return read()

    return list(await asyncio.gather(*(run(read) for read in reads)))


@pytest.mark.core
def test_the_tasks_of_one_turn_share_a_value_until_the_loop_goes_round() -> None:
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()

    async def main() -> None:
        once = lambda: in_attempt(memo, read)  # noqa: E731
        assert await together(once, once, once) == [1, 1, 1]
        assert await together(once, once) == [2, 2]  # a later turn reads again

    asyncio.run(main())
    assert read.count == 2


@pytest.mark.core
def test_the_task_that_read_a_value_reads_again() -> None:
    """It may have written some other way since (an app called in process,
    twice in one step)."""
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()

    async def main() -> list[int]:
        return [in_attempt(memo, read), in_attempt(memo, read)]

    assert asyncio.run(main()) == [1, 2]


@pytest.mark.core
def test_a_write_through_any_store_ends_the_turns_values() -> None:
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()

    def writing() -> int:
        turnmemo.wrote()
        return in_attempt(memo, read)

    async def main() -> list[int]:
        once = lambda: in_attempt(memo, read)  # noqa: E731
        return await together(once, writing, once)

    assert asyncio.run(main()) == [1, 2, 2]


@pytest.mark.core
def test_a_write_during_the_read_is_not_kept() -> None:
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()

    def read_while_written() -> int:
        turnmemo.wrote()  # another thread's write, between the read's start and end
        return read()

    async def main() -> list[int]:
        first = lambda: in_attempt(memo, read_while_written)  # noqa: E731
        return await together(first, lambda: in_attempt(memo, read))

    assert asyncio.run(main()) == [1, 2]


@pytest.mark.core
def test_nothing_is_kept_outside_an_attempt_on_a_loop() -> None:
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()
    assert [in_attempt(memo, read), in_attempt(memo, read)] == [1, 2]  # no loop

    async def main() -> list[int]:
        plain = lambda: memo.value("k", read)  # noqa: E731  # no attempt
        return await together(plain, plain)

    assert asyncio.run(main()) == [3, 4]


@pytest.mark.core
def test_a_forked_child_starts_with_no_turn() -> None:
    """Its copy of the parent's loop says it runs, and never ends the turn."""
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()

    def fork_and_ask() -> int:
        pid = os.fork()
        if pid == 0:  # the child: its own loop, another task
            seen = asyncio.run(together(lambda: in_attempt(memo, read)))
            os._exit(0 if seen == [2] else 1)
        return os.waitpid(pid, 0)[1]

    async def main() -> list[int]:
        return await together(lambda: in_attempt(memo, read), fork_and_ask)

    assert asyncio.run(main()) == [1, 0]


@pytest.mark.core
def test_nothing_is_kept_on_a_loop_with_a_task_factory() -> None:
    """An eager task runs a request's handler as its bytes arrive, ahead of
    the callbacks the turn already has."""
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop))
        once = lambda: in_attempt(memo, read)  # noqa: E731
        return await together(once, once)

    assert asyncio.run(main()) == [1, 2]


@pytest.mark.core
def test_a_value_read_on_one_loop_is_not_given_on_another() -> None:
    memo: TurnMemo[str, int] = TurnMemo()
    read = Reads()
    inside, outside = threading.Event(), threading.Event()
    seen: list[int] = []

    async def holder() -> None:
        # Reads, then holds its turn open (blocking: the turn cannot end)
        # while the other loop asks.
        seen.append(in_attempt(memo, read))
        inside.set()
        outside.wait(10)

    async def other() -> None:
        seen.extend(await together(lambda: in_attempt(memo, read)))

    thread = threading.Thread(target=lambda: asyncio.run(holder()))
    thread.start()
    assert inside.wait(10)
    asyncio.run(other())
    outside.set()
    thread.join(10)
    assert seen == [1, 2]


def marks_read_once_a_turn(
    store: Store, reads: Callable[[], int], write: Callable[[], None]
) -> None:
    """``store.mark()`` asked by three tasks of one turn: read once (``reads``
    counts); in a later turn, again; after ``write`` in the turn, again."""

    def mark() -> Mark:
        with nowait.attempt():
            return store.mark()

    def write_then_mark() -> Mark:
        write()
        return mark()

    async def main() -> None:
        first = await together(mark, mark, mark)
        assert reads() == 1 and first == [first[0]] * 3
        await together(mark)  # a later turn
        assert reads() == 2
        before, after = await together(mark, write_then_mark)
        assert reads() == 4 and after.head > before.head

    asyncio.run(main())


@pytest.mark.filesystem
def test_files_the_mark_is_read_once_a_turn_and_again_after_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore.open(tmp_path)
    assert store.index is not None
    store._breaker = Breaker(budget=LAVISH_BUDGET)  # no mark refused as slow
    heads: list[int] = []
    real_head = store.index.head

    def head() -> int:
        heads.append(real_head())
        return heads[-1]

    monkeypatch.setattr(store.index, "head", head)
    try:
        marks_read_once_a_turn(
            store,
            lambda: len(heads),
            lambda: store.put({"job_id": "a", "job_status": "done"}),
        )
    finally:
        store.close()


@pytest.mark.sqlite
def test_sqlite_the_mark_is_read_once_a_turn_and_again_after_a_write(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    other = SQLiteStore(tmp_path / "jobs.db")  # another object: its writes count
    store._breaker = Breaker(budget=LAVISH_BUDGET)  # no mark refused as slow
    ran: list[str] = []
    store._conn.set_trace_callback(ran.append)
    try:
        marks_read_once_a_turn(
            store,
            lambda: sum("jobstatus_meta" in sql for sql in ran),
            lambda: other.put({"job_id": "a", "job_status": "done"}),
        )
    finally:
        store.close()
        other.close()


def toolkit_write(jobs: Path, job_id: str, status: str) -> None:
    """As the Toolkit writes a job: a whole new file renamed into place."""
    part = jobs / f".{job_id}.part"
    part.write_text(json.dumps({"job_id": job_id, "job_status": status}))
    part.replace(jobs / f"{job_id}.json")


def sqlite_write(path: Path, job_id: str, status: str) -> None:
    """As another program writes a job: its own connection, plain SQL."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE jobs SET job_status = ?, record = ?, record_digest = NULL"
            " WHERE job_id = ?",
            (
                json.dumps(status),
                json.dumps({"job_id": job_id, "job_status": status}),
                job_id,
            ),
        )
    conn.close()


async def polled_while_written(
    url: str, write: Callable[[int], None], writes: int
) -> list[tuple[int, str]]:
    """``POLLERS`` clients poll job "j" without pause; meanwhile each write is
    followed, once made, by a poll of its own. Returns (write, status seen)
    of the polls that did not see their write."""
    headers = {"x-api-key": API_KEY}
    body = {"job_id": "j"}
    done = asyncio.Event()
    missed: list[tuple[int, str]] = []
    limits = httpx.Limits(max_connections=POLLERS + 1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def poll() -> None:
            while not done.is_set():
                await client.post(JOB, json=body, headers=headers)

        pollers = [asyncio.create_task(poll()) for _ in range(POLLERS)]
        try:
            for n in range(1, writes + 1):
                await asyncio.to_thread(write, n)
                answer = await client.post(JOB, json=body, headers=headers)
                status = answer.json()["response"]["job_status"]
                if status != f"step-{n}":
                    missed.append((n, status))
        finally:
            done.set()
            await asyncio.gather(*pollers)
    return missed


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.sqlite
def test_sqlite_a_poll_sent_after_a_write_sees_it(tmp_path: Path, loop: str) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.put({"job_id": "j", "job_status": "step-0"})
    missed = serve_and_poll(store, loop, lambda n: sqlite_write(path, "j", f"step-{n}"))
    assert missed == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.filesystem
def test_files_a_poll_sent_after_a_write_sees_it(
    tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every file kept at once, however fresh: the kept answers are what is
    # proved here, not the settling rule (tests/test_filesystem_store.py).
    monkeypatch.setattr("jobstatus_backends.filesystem.SETTLED_NS", -(10**18))
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    toolkit_write(jobs, "j", "step-0")
    store = FileStore.open(tmp_path)
    missed = serve_and_poll(
        store, loop, lambda n: toolkit_write(jobs, "j", f"step-{n}")
    )
    assert missed == []


def serve_and_poll(
    store: Store, loop: str, write: Callable[[int], None]
) -> list[tuple[int, str]]:
    try:
        app = create_app(service_for(store), dashboard=False)
        with LiveServer(app, loop=loop) as server:
            return asyncio.run(polled_while_written(server.url, write, WRITES))
    finally:
        store.close()


def evalsha_calls(url: str) -> int:
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.redis
def test_redis_reads_of_one_turn_share_a_round_trip(redis_server: RedisServer) -> None:
    url = redis_server.url + "?prefix=turns:"
    store = RedisStore.from_url(url)
    for job_id in ("a", "b"):
        store.put({"job_id": job_id, "job_status": "running"})

    async def main() -> None:
        await read_on_the_loop(store, "a")  # the layout checked, scripts loaded
        before = evalsha_calls(redis_server.url)
        seen = await asyncio.gather(*(read_on_the_loop(store, "a") for _ in range(8)))
        assert seen == ['"running"'] * 8
        assert evalsha_calls(redis_server.url) - before == 1
        # Another job is another round trip; a later turn, another again.
        before = evalsha_calls(redis_server.url)
        both = [read_on_the_loop(store, job_id) for job_id in ("a", "b", "a")]
        assert await asyncio.gather(*both) == ['"running"'] * 3
        assert evalsha_calls(redis_server.url) - before == 2
        # A write, then a read: a round trip of its own, sent after the write.
        store.put({"job_id": "a", "job_status": "done"})
        assert await read_on_the_loop(store, "a") == '"done"'

    try:
        asyncio.run(main())
    finally:
        store.close()


@pytest.mark.redis
def test_redis_windows_of_one_second_share_a_round_trip_each_cut_at_its_cutoff(
    redis_server: RedisServer,
) -> None:
    """The requests of a turn whose kept listing aged out at once: one
    window read for the second their cutoffs fall in, each answer exactly
    its own window, as on a thread."""
    url = redis_server.url + "?prefix=windows:"
    store = RedisStore.from_url(url)
    for job_id, at in (("z", 99.9), ("a", 100.2), ("b", 100.5), ("c", 100.7)):
        store.put({"job_id": job_id, "job_status": "running"}, at=at)
    store.put({"job_id": "d", "job_status": "done"}, at=101.0)
    cutoffs = (100.5, 100.75, 100.2, 101.0, 101.5)

    async def main() -> list[Window]:
        await attempted_on_the_loop(lambda: store.window(0.0))  # scripts loaded
        before = evalsha_calls(redis_server.url)
        windows = await asyncio.gather(
            *(attempted_on_the_loop(partial(store.window, c)) for c in cutoffs)
        )
        assert evalsha_calls(redis_server.url) - before == 2  # 100 and 101
        return windows

    try:
        windows = asyncio.run(main())
        members = [list(window.members) for window in windows]
        assert members == [
            ['"b":"running"', '"c":"running"', '"d":"done"'],
            ['"d":"done"'],
            ['"a":"running"', '"b":"running"', '"c":"running"', '"d":"done"'],
            ['"d":"done"'],
            [],
        ]
        oldest = [window.oldest for window in windows]
        assert oldest == [100.5, 101.0, 100.2, 101.0, None]
        assert windows == [store.window(c) for c in cutoffs]
    finally:
        store.close()


@pytest.mark.redis
def test_redis_requests_sharing_a_round_trip_outlive_the_one_that_sent_it(
    redis_server: RedisServer,
) -> None:
    import redis

    # A timeout the paused round trip never reaches, however late the loop.
    url = redis_server.url + "?prefix=cancelled:&timeout=10"
    store = RedisStore.from_url(url)
    store.put({"job_id": "a", "job_status": "running"})
    raw = redis.Redis.from_url(redis_server.url)

    async def main() -> None:
        await read_on_the_loop(store, "a")  # the layout checked, scripts loaded
        # The round trip (a script: paused as a write) waits on redis-server
        # until unpaused below: a pause that ends by itself may end first on
        # a busy machine. (Not ``all``: that pauses the unpause too.)
        raw.client_pause(10000, all=False)
        try:
            reads = [
                asyncio.create_task(read_on_the_loop(store, "a")) for _ in range(3)
            ]
            await asyncio.sleep(0.2)  # all three asked: one round trip, in flight
            reads[0].cancel()  # its client went away
        finally:
            raw.client_unpause()
        assert await asyncio.gather(*reads[1:]) == ['"running"'] * 2
        assert reads[0].cancelled()

    try:
        asyncio.run(main())
    finally:
        store.close()
        raw.close()


@pytest.mark.redis
def test_redis_a_request_cancelled_with_its_shared_round_trip_stays_cancelled(
    redis_server: RedisServer,
) -> None:
    """As a loop shutting down cancels every task: no request sends a round
    trip of its own instead."""
    import redis

    # A timeout the paused round trip never reaches, however late the loop.
    url = redis_server.url + "?prefix=shutdown:&timeout=10"
    store = RedisStore.from_url(url)
    store.put({"job_id": "a", "job_status": "running"})
    raw = redis.Redis.from_url(redis_server.url)

    async def main() -> list[object]:
        await read_on_the_loop(store, "a")  # the layout checked, scripts loaded
        # The round trip (a script: paused as a write) is held until
        # unpaused below: a pause that ends by itself may end first on a
        # busy machine. (Not ``all``: that pauses the unpause too.)
        raw.client_pause(10000, all=False)
        try:
            reads = [
                asyncio.create_task(read_on_the_loop(store, "a")) for _ in range(3)
            ]
            await asyncio.sleep(0.2)  # all three asked: one round trip, in flight
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        finally:
            raw.client_unpause()
        return await asyncio.gather(*reads, return_exceptions=True)

    try:
        outcomes = asyncio.run(main())
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    finally:
        raw.client_unpause()
        store.close()
        raw.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.redis
def test_redis_a_poll_sent_after_a_write_sees_it(
    redis_server: RedisServer, loop: str
) -> None:
    url = f"{redis_server.url}?prefix=sees-{loop}:"
    store = RedisStore.from_url(url)
    # Another client, as another process's.
    writer = RedisStore.from_url(url)
    writer.put({"job_id": "j", "job_status": "step-0"})

    def write(n: int) -> None:
        writer.put({"job_id": "j", "job_status": f"step-{n}"})

    try:
        assert serve_and_poll(store, loop, write) == []
    finally:
        writer.close()
