"""PostgreSQL reads from the event loop: the sync pool on the store threads
against the store's own reads on the loop (``AsyncReads``).

Run by hand (not a test; needs PostgreSQL's server binaries):
    python bench/postgres_client.py [--rounds 5]

Starts a throwaway cluster (bench/protocol.py's) and writes one job through
``PostgresStore``. Then, on uvloop, ``C`` tasks at once read that job
``--reads`` times in all, for C in 1, 4, 16 and 64, two ways, each through
the store's own code:

- ``threads``: ``StoreThreads.run(lambda: store.read_text(job_id))``,
  psycopg's sync pool on a worker thread, the calls of one loop iteration
  handed over in one batch (which shares one read among them:
  ``batchreads``);
- ``asyncio``: ``store.read_text_async(job_id)``, what the Starlette
  adapter awaits for ``job/status``: the loop's own connection, one
  statement out at a time, the reads asked while it is out sent together
  as the next (``backends/postgresasync.py``).
  (An earlier way, one statement per read on an ``AsyncConnectionPool``,
  measured slower than the threads: docs/performance.md, "PostgreSQL on
  the event loop: built, measured, not taken".)

Each round runs both ways alternately; the table gives the median over
rounds of this process's CPU time per read (what bounds a server's
requests per second) and of the wall time per read, and the ratio
asyncio/threads (below 1: asyncio cheaper). The server's own CPU is not
counted: it is the same both ways, or less with fewer statements.

A second table gives what one statement costs on the loop, one at a time:
the store's loop statement for the job, prepared, sent by psycopg's
``AsyncConnection.execute`` against the store's own ``Wire`` (libpq
through psycopg's ``pgconn``, what ``asyncio`` above sends with).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import uvloop
from protocol import start_postgres
from redis_client import compare, timed

from jobstatus_adapters.offload import StoreThreads
from jobstatus_backends.postgres import PostgresStore
from jobstatus_backends.postgresasync import Wire

JOB = "job-1"


async def with_threads(store: PostgresStore, reads: int, concurrency: int) -> Any:
    threads = StoreThreads()
    return await timed(
        lambda: threads.run(lambda: store.read_text(JOB)), reads, concurrency
    )


async def with_asyncio(store: PostgresStore, reads: int, concurrency: int) -> Any:
    return await timed(lambda: store.read_text_async(JOB), reads, concurrency)


async def statements(store: PostgresStore, way: str, reads: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per statement, one at a time, on a new connection."""
    statement, ids = store._sql.loop_reads, JOB
    connection = await psycopg.AsyncConnection.connect(store._conninfo, autocommit=True)
    if way == "psycopg":
        # psycopg's own placeholder for the same statement.
        text = statement.replace("$1", "%s")

        async def read() -> Any:
            cursor = await connection.execute(text, (ids,), prepare=True)
            return await cursor.fetchall()

        async with connection:
            return await timed(read, reads, 1)
    wire = Wire(connection)
    try:
        return await timed(lambda: wire.rows(statement, (ids.encode(),), 5.0), reads, 1)
    finally:
        wire.close()  # and its connection, its reader first off the loop


def compare_statements(store: PostgresStore, reads: int, rounds: int) -> None:
    print(
        f"One statement at a time on the loop, {reads} statements, median of {rounds}"
    )
    print(
        f"{'psycopg CPU':>11} | {'Wire CPU':>8} | {'ratio':>5} | "
        f"{'psycopg wall':>12} | {'Wire wall':>9}"
    )
    got: dict[str, list[tuple[float, float]]] = {"psycopg": [], "wire": []}
    for _ in range(rounds):
        for way, measured in got.items():
            measured.append(uvloop.run(statements(store, way, reads)))
    cpu = {w: statistics.median(c for c, _ in m) for w, m in got.items()}
    wall = {w: statistics.median(t for _, t in m) for w, m in got.items()}
    print(
        f"{cpu['psycopg']:>8.1f} µs | {cpu['wire']:>5.1f} µs | "
        f"{cpu['wire'] / cpu['psycopg']:>5.2f} | "
        f"{wall['psycopg']:>9.1f} µs | {wall['wire']:>6.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        Path(directory).chmod(0o755)  # the cluster's user reaches into it
        stop, url = start_postgres(Path(directory))
        store = PostgresStore(url)
        try:
            store.put({"job_id": JOB, "job_status": "running", "progress": 40})
            store.read(JOB)  # the schema checked: the loop's reads may begin
            compare(
                f"PostgreSQL read of one job, {args.reads} reads,"
                f" median of {args.rounds}",
                lambda way, concurrency: way(store, args.reads, concurrency),
                {"threads": with_threads, "asyncio": with_asyncio},
                args.rounds,
            )
            print()
            compare_statements(store, args.reads, args.rounds)
        finally:
            store.close()
            stop()


if __name__ == "__main__":
    main()
