"""PostgreSQL reads from the event loop: the sync pool on the store threads
against psycopg's asyncio pool on the loop — why the store reads on threads.

Run by hand (not a test; needs PostgreSQL's server binaries):
    python bench/postgres_client.py [--rounds 5]

Starts a throwaway cluster (bench/protocol.py's) and writes one job through
``PostgresStore``. Then, on uvloop, ``C`` tasks at once read that job
``--reads`` times in all, for C in 1, 4, 16 and 64, two ways, each through
the store's own code:

- ``threads``: what the Starlette adapter does for PostgreSQL —
  ``StoreThreads.run(lambda: store.read(job_id))``, psycopg's sync pool on a
  worker thread, the calls of one loop iteration handed over in one batch;
- ``asyncio``: the store's read statement on a psycopg
  ``AsyncConnectionPool`` of the same size from the loop itself, no
  thread, the rows made into a ``Row`` by the store's own code — the least
  a read on the loop would cost (docs/performance.md, "PostgreSQL on the
  event loop: measured, not taken").

Each round runs both ways alternately; the table gives the median over
rounds of this process's CPU time per read (what bounds a server's
requests per second) and of the wall time per read, and the ratio
asyncio/threads (below 1: asyncio cheaper). The server's own CPU is not
counted: it is the same both ways.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import psycopg_pool
from protocol import start_postgres
from redis_client import compare, timed

from jobstatus_adapters.offload import StoreThreads
from jobstatus_backends.postgres import DEFAULT_MAX_CONNECTIONS, PostgresStore, _row
from jobstatus_core import Row

JOB = "job-1"


async def with_threads(store: PostgresStore, reads: int, concurrency: int) -> Any:
    threads = StoreThreads()
    return await timed(lambda: threads.run(lambda: store.read(JOB)), reads, concurrency)


async def with_asyncio(store: PostgresStore, reads: int, concurrency: int) -> Any:
    pool = psycopg_pool.AsyncConnectionPool(
        store._conninfo,
        kwargs={"autocommit": True},
        min_size=1,
        max_size=DEFAULT_MAX_CONNECTIONS,
        open=False,
    )
    await pool.open()
    sql = store._sql.read

    async def read() -> Row:
        async with pool.connection() as conn:
            cursor = await conn.execute(sql, (JOB,))
            return _row((await cursor.fetchall())[0], with_record=True)

    try:
        return await timed(read, reads, concurrency)
    finally:
        await pool.close()


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
            compare(
                f"PostgreSQL read of one job, {args.reads} reads,"
                f" median of {args.rounds}",
                lambda way, concurrency: way(store, args.reads, concurrency),
                {"threads": with_threads, "asyncio": with_asyncio},
                args.rounds,
            )
        finally:
            store.close()
            stop()


if __name__ == "__main__":
    main()
