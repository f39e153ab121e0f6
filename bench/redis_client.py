"""Redis reads from the event loop: the sync client on the store threads
against redis.asyncio on the loop.

Run by hand (not a test):  python bench/redis_client.py [--rounds 5]

Starts a redis-server of its own (no persistence) on a free port and writes
one job through ``RedisStore``. Then, on uvloop, ``C`` tasks at once read
that job ``--reads`` times in all, for C in 1, 4, 16 and 64, two ways:

- ``threads``: what the Starlette adapter does for the Redis store —
  ``StoreThreads.run(lambda: store.read(job_id))``, the sync redis-py client
  (hiredis) on a worker thread, the calls of one loop iteration handed over
  in one batch;
- ``asyncio``: the same read script (``READ_SCRIPT``, one round trip) sent
  with ``redis.asyncio`` from the loop itself, no thread, and the reply made
  into a ``Row`` by the store's own code.

Each round runs both ways alternately on fresh clients; the table gives the
median over rounds of the CPU time of this process per read (what bounds a
server's requests per second) and of the wall time per read, and the ratio
asyncio/threads (below 1: asyncio cheaper).

Machines are shared and noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis
import uvloop
from redis_expiry import start_redis

from jobstatus_adapters.offload import StoreThreads
from jobstatus_backends.redis import RedisStore
from jobstatus_backends.redisscripts import READ_SCRIPT

JOB = "job-1"
CONCURRENCY = (1, 4, 16, 64)


async def timed(
    read: Callable[[], Awaitable[Any]], reads: int, concurrency: int
) -> tuple[float, float]:
    """(CPU µs, wall µs) per read, ``concurrency`` tasks at once."""

    async def task(n: int) -> None:
        for _ in range(n):
            await read()

    await task(50)  # connections made, script loaded
    per_task = reads // concurrency
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(task(per_task) for _ in range(concurrency)))
    done = per_task * concurrency
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return cpu / done * 1e6, wall / done * 1e6


async def with_threads(url: str, reads: int, concurrency: int) -> tuple[float, float]:
    store = RedisStore(url)
    threads = StoreThreads()
    try:
        return await timed(
            lambda: threads.run(lambda: store.read(JOB)), reads, concurrency
        )
    finally:
        store.close()


async def with_asyncio(url: str, reads: int, concurrency: int) -> tuple[float, float]:
    store = RedisStore(url)  # its key names and its reply-to-row code
    client = aredis.Redis.from_url(url, decode_responses=True, max_connections=128)
    script = client.register_script(READ_SCRIPT)
    keys = [store._updated, store._status, store._changes, store._epoch]

    async def read() -> Any:
        reply = await script(keys=keys, args=[store._jobs, JOB])
        return store._rows([JOB], reply)[JOB]

    try:
        return await timed(read, reads, concurrency)
    finally:
        await client.aclose()
        store.close()


def compare(
    title: str,
    run: Callable[[Any, int], Awaitable[tuple[float, float]]],
    ways: dict[str, Any],
    rounds: int,
) -> None:
    """Print the table: ``threads`` against ``asyncio`` (the two ``ways``),
    each ``run(way, concurrency)`` on a fresh uvloop, alternately, ``rounds``
    times per concurrency; medians."""
    print(title)
    print(
        f"{'in flight':>9} | {'threads CPU':>11} | {'asyncio CPU':>11} | "
        f"{'ratio':>5} | {'threads wall':>12} | {'asyncio wall':>12}"
    )
    for concurrency in CONCURRENCY:
        got: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
        for _ in range(rounds):
            for name, way in ways.items():
                got[name].append(uvloop.run(run(way, concurrency)))
        cpu = {w: statistics.median(c for c, _ in got[w]) for w in ways}
        wall = {w: statistics.median(t for _, t in got[w]) for w in ways}
        print(
            f"{concurrency:>9} | {cpu['threads']:>8.1f} µs | "
            f"{cpu['asyncio']:>8.1f} µs | "
            f"{cpu['asyncio'] / cpu['threads']:>5.2f} | "
            f"{wall['threads']:>9.1f} µs | {wall['asyncio']:>9.1f} µs"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, url = start_redis(directory)
        try:
            store = RedisStore(url)
            store.put({"job_id": JOB, "job_status": "running", "progress": 40})
            store.close()
            compare(
                f"Redis read of one job, {args.reads} reads, median of {args.rounds}",
                lambda way, concurrency: way(url, args.reads, concurrency),
                {"threads": with_threads, "asyncio": with_asyncio},
                args.rounds,
            )
        finally:
            process.terminate()
            process.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
