"""File store retention benchmark: tombstone size, and stale + expire speed.

Run by hand (not a test):  python bench/fileretention.py [--jobs 100000]

- Bytes per tombstone: 10,000 expiries, the tombstone file's size before and
  after (checkpointed), against one small file per tombstone (blocks used).
- ``stale`` + ``expire`` in batches of 1,000 on a directory of ``--jobs``
  Toolkit files, the indexed store and ``?index=off`` side by side in one
  run: medians of the batches, in jobs per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from jobstatus_backends.fileexpiry import TOMBSTONES_PATH, ExpiringFileStore
from jobstatus_backends.filesystem import FileStore
from jobstatus_core import Stale

BATCH = 1000


def fill(root: Path, count: int) -> None:
    jobs = root / "jobs"
    jobs.mkdir(parents=True)
    for i in range(count):
        path = jobs / f"job-{i:07}.json"
        path.write_text(json.dumps({"job_id": path.stem, "job_status": "done"}))
        os.utime(path, (1000.0 + i, 1000.0 + i))


def open_store(root: Path, index: bool) -> ExpiringFileStore:
    store = FileStore.open(root, index=index, expire="delete")
    assert isinstance(store, ExpiringFileStore)
    return store


def checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def tombstone_bytes(scratch: Path, count: int = 10_000) -> tuple[float, float]:
    root = scratch / "size"
    fill(root, count + 1)
    store = open_store(root, index=False)
    graves = root / TOMBSTONES_PATH
    checkpoint(graves)
    before = graves.stat().st_size
    while store.expire(store.stale(Stale(before=1e9, limit=5000)), at=5000.0):
        pass
    checkpoint(graves)
    after = graves.stat().st_size
    store.close()
    # The other way: a small file per tombstone.
    files = scratch / "files"
    files.mkdir()
    for i in range(count):
        (files / f"job-{i:07}.json").write_text(
            json.dumps({"job_status": "done", "expired_at": 5000.0, "position": i})
        )
    per_file = sum(p.stat().st_blocks * 512 for p in files.iterdir()) / count
    return (after - before) / count, per_file


def purge_rates(root: Path, index: bool, batches: int) -> tuple[float, float]:
    store = open_store(root, index)
    stale_times, expire_times = [], []
    try:
        for _ in range(batches):
            started = time.perf_counter()
            rows = store.stale(Stale(before=1e9, limit=BATCH))
            found = time.perf_counter()
            tombs = store.expire(rows, at=5000.0)
            done = time.perf_counter()
            assert len(tombs) == BATCH
            stale_times.append(found - started)
            expire_times.append(done - found)
    finally:
        store.close()
    return BATCH / statistics.median(stale_times), BATCH / statistics.median(
        expire_times
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="jobstatus-retention-"))
    try:
        sqlite_bytes, file_bytes = tombstone_bytes(scratch)
        print("bytes per tombstone (10,000)")
        print(f"  SQLite file beside jobs/   {sqlite_bytes:8.0f}")
        print(f"  one file per tombstone     {file_bytes:8.0f}")
        print(f"  ratio                      {file_bytes / sqlite_bytes:8.1f}x")
        print(
            f"\nstale + expire, batches of {BATCH}, {args.jobs:,} files"
            " (jobs/s, median)"
        )
        print(f"  {'store':<12}{'stale':>12}{'expire':>12}{'both':>12}")
        results = {}
        for name, index in (("indexed", True), ("index=off", False)):
            root = scratch / name
            fill(root, args.jobs)
            results[name] = purge_rates(root, index, args.batches)
            stale, expire = results[name]
            both = 1 / (1 / stale + 1 / expire)
            print(f"  {name:<12}{stale:12,.0f}{expire:12,.0f}{both:12,.0f}")
        ratio = results["indexed"][0] / results["index=off"][0]
        print(f"  stale: the index is {ratio:,.0f}x the scan")
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
