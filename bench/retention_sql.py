"""Retention on the SQL stores: tombstone size and purge throughput.

Run by hand (not a test):  python bench/retention_sql.py [--jobs 100000]
[--tombstones 10000] [--stores sqlite,postgres]

For each store, in one run:

- bytes per tombstone: the tombstone table and its indexes before and after
  expiring ``--tombstones`` jobs (SQLite: ``dbstat`` pages; PostgreSQL:
  ``pg_total_relation_size``), divided by their number;
- purge throughput: a store of ``--jobs`` done jobs purged by ``stale`` +
  ``expire`` in batches of 1,000, as ``jobstatus purge`` does; jobs/s per
  batch, median and extremes.

Machines are shared and noisy: medians, and numbers of one run side by side,
are what to compare.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import start_postgres

from jobstatus_backends.postgres import PostgresStore
from jobstatus_backends.sqlite import PUT_SQL, SQLiteStore
from jobstatus_core import Stale

BATCH = 1000


def fill(store: Any, jobs: int) -> None:
    """``jobs`` done jobs, written as ``put`` writes them, in one transaction
    (the fill is not what is measured)."""
    values = [
        (f"job-{i:07}", '"done"', 1000.0 + i, f'{{"job_id": "job-{i:07}"}}')
        for i in range(jobs)
    ]
    if isinstance(store, SQLiteStore):
        conn = store._conn
        conn.execute("BEGIN")
        conn.executemany(PUT_SQL, values)
        conn.execute("COMMIT")
        return

    def put_all(conn: Any) -> None:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(store._sql.put, values)

    store._run(put_all)


def purge(store: Any) -> list[float]:
    """jobs/s of each batch until nothing is stale."""
    rates = []
    while True:
        started = time.perf_counter()
        rows = store.stale(Stale(before=1e9, limit=BATCH))
        if not rows:
            return rates
        expired = store.expire(rows, at=2e9)
        rates.append(len(expired) / (time.perf_counter() - started))


def sqlite_tombstone_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    (size,) = conn.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE name IN ('job_tombstones',"
        " 'sqlite_autoindex_job_tombstones_1', 'job_tombstones_expired_at')"
    ).fetchone()
    conn.close()
    return int(size)


def postgres_tombstone_bytes(store: PostgresStore) -> int:
    def size(conn: Any) -> int:
        conn.execute("VACUUM")  # settles the visibility map and free space
        found = conn.execute(
            "SELECT pg_total_relation_size(%s)", (store._sql.tombstones_table,)
        ).fetchone()
        return int(found[0])

    return store._run(size)


def measure(
    name: str,
    make: Callable[[], Any],
    size: Callable[[Any], int],
    jobs: int,
    tombstones: int,
) -> None:
    store = make()
    fill(store, tombstones)
    before = size(store)
    purge(store)
    after = size(store)
    store.close()
    per = (after - before) / tombstones
    print(f"{name:10} bytes per tombstone: {per:7.1f}  ({before} -> {after} bytes)")
    store = make()
    fill(store, jobs)
    if isinstance(store, PostgresStore):
        store._run(lambda conn: conn.execute("VACUUM ANALYZE"))
    rates = purge(store)
    store.close()
    print(
        f"{name:10} purge of {jobs} jobs in batches of {BATCH}: median"
        f" {statistics.median(rates):8.0f} jobs/s  (min {min(rates):.0f},"
        f" max {max(rates):.0f}, {len(rates)} batches)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--tombstones", type=int, default=10_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    stores = args.stores.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # the postgres user runs its cluster inside
        if "sqlite" in stores:
            counter = iter(range(1_000))

            def sqlite_store() -> SQLiteStore:
                return SQLiteStore(directory / f"jobs-{next(counter)}.db")

            measure(
                "sqlite",
                sqlite_store,
                lambda store: sqlite_tombstone_bytes(store.path),
                args.jobs,
                args.tombstones,
            )
        if "postgres" in stores:
            (directory / "pg").mkdir()
            stop, url = start_postgres(directory / "pg")
            schemas = iter(range(1_000))
            try:
                measure(
                    "postgres",
                    lambda: PostgresStore(
                        url, schema=f"bench_{next(schemas)}", timeout=60.0
                    ),
                    postgres_tombstone_bytes,
                    args.jobs,
                    args.tombstones,
                )
            finally:
                stop()


if __name__ == "__main__":
    main()
