"""Store benchmark: listing and get on Toolkit-shaped stores, side by side.

Run by hand (not a test):  python bench/stores.py [--sizes 1000,10000,100000]

Each size builds one store of N jobs whose "last written" times are spread
over 30 days, 1% of them within the last 10 minutes, then measures in one run:

- listing with the default window (600 s: the core's ``Listings.json`` over
  the store's ``window``, what
  ``jobs/status`` asks of a store) read afresh, the same again answered by a
  kept listing (nothing written since), and ``get`` on
  - the filesystem store with its watchdog index,
  - a per-request scan doing what the Toolkit does (list the directory, stat
    every file, parse the matches),
  - the SQLite store,
  - the Redis store (when redis-server is installed), filled by
    ``jobstatus migrate file:///… redis://…``, whose time is a column too;
- the index's build time and its memory per job.

Machines are shared and noisy: medians of repeated runs, and ratios measured
in the same run, are what to compare.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobstatus_backends import store_from_url
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.sqlite import SQLiteStore
from jobstatus_core.listing import Listings

DAY = 86400.0
WINDOW = 600.0
STATUSES = ("queued", "running", "done", "done", "done", "failed")


def toolkit_listing(
    jobs_dir: str, since_seconds: float, now: float | None = None
) -> dict[str, Any]:
    """The Toolkit API's own listing: every file, every request."""
    cutoff = (time.time() if now is None else now) - since_seconds
    result = {}
    for name in os.listdir(jobs_dir):
        if not name.endswith(".json"):
            continue
        path = os.path.join(jobs_dir, name)
        if os.path.getmtime(path) >= cutoff:
            with open(path) as file:
                record = json.load(file)
            if "job_status" in record:
                result[name[:-5]] = record["job_status"]
    return result


def toolkit_get(jobs_dir: str, job_id: str) -> dict[str, Any] | None:
    path = os.path.join(jobs_dir, job_id + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)  # type: ignore[no-any-return]


def plan_jobs(
    n: int, now: float, seed: int = 7
) -> list[tuple[str, float, dict[str, Any]]]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        job_id = f"{rng.getrandbits(64):016x}-{i}"
        recent = i % 100 == 0  # 1% within the last 10 minutes
        age = (
            rng.uniform(0, WINDOW * 0.9)
            if recent
            else rng.uniform(WINDOW * 1.1, 30 * DAY)
        )
        record = {
            "job_id": job_id,
            "job_status": rng.choice(STATUSES),
            "queue_id": 140000000000000 + i,
            "process_id": 1000 + i % 50,
            "response": {
                "code": 200,
                "response": f"https://cdn.example/{job_id}.mp4",
                "message": "success",
            },
        }
        jobs.append((job_id, now - age, record))
    return jobs


def build_files(root: Path, jobs: list[tuple[str, float, dict[str, Any]]]) -> None:
    jobs_dir = root / "jobs"
    jobs_dir.mkdir(parents=True)
    for job_id, at, record in jobs:
        path = jobs_dir / f"{job_id}.json"
        path.write_text(json.dumps(record))
        os.utime(path, (at, at))


def build_sqlite(path: Path, jobs: list[tuple[str, float, dict[str, Any]]]) -> None:
    """The jobs as the store writes them (its record texts and digests), in
    bulk: one ``put`` per job would take minutes at 1,000,000."""
    store = SQLiteStore(path)
    store.close()
    import sqlite_utils

    from jobstatus_backends.sqlite import record_digest
    from jobstatus_backends.storedjson import kept_text

    def row(job_id: str, at: float, record: dict[str, Any]) -> dict[str, Any]:
        text = kept_text(record)
        return {
            "job_id": job_id,
            "job_status": json.dumps(record["job_status"]),
            "updated_at": at,
            "record": text,
            "record_digest": record_digest(text),
        }

    db = sqlite_utils.Database(path)
    db.table("jobs").insert_all(
        (row(*job) for job in jobs),
        batch_size=5000,
    )
    db.close()


def median_ms(action: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def index_memory_per_job(root: Path, n: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = FileStore(root, reconcile_interval=3600)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    store.close()
    return (after - before) / n


def start_redis(
    directory: str, *, batch: bool = False
) -> tuple[subprocess.Popen[bytes], str] | None:
    """A throwaway redis-server on a free loopback port, and its URL; with
    ``batch``, run as a batch process (``chrt -b 0``: docs/scaling.md)."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: the Redis columns stay empty", file=sys.stderr)
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # chrt execs redis-server: the process is still the one to watch.
    policy = ["chrt", "-b", "0"] if batch else []
    process = subprocess.Popen(
        [
            *policy,
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            directory,
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0"


def timed_migrate(src: str, dst: str) -> float:
    """`jobstatus migrate SRC DST` as a user runs it, start-up included."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "jobstatus_adapters.cli", "migrate", src, dst],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def run(n: int, repeat: int) -> dict[str, float]:
    now = time.time()
    jobs = plan_jobs(n, now)
    ids = [job_id for job_id, _, _ in jobs]
    with tempfile.TemporaryDirectory(prefix="jobstatus-bench-") as tmp:
        root = Path(tmp) / "storage"
        build_files(root, jobs)
        build_sqlite(Path(tmp) / "jobs.db", jobs)
        jobs_dir = str(root / "jobs")

        start = time.perf_counter()
        fs = FileStore(root, reconcile_interval=3600)
        build_s = time.perf_counter() - start
        stores: dict[str, Any] = {"sqlite": SQLiteStore(Path(tmp) / "jobs.db")}
        redis_server = start_redis(tmp)
        migrate_s = float("nan")
        if redis_server is not None:
            migrate_s = timed_migrate(f"file://{root}?index=off", redis_server[1])
            stores["redis"] = store_from_url(redis_server[1])

        def window() -> float:
            return time.time() - WINDOW

        # Every store lists what the Toolkit does, for one fixed window: a
        # moving one loses a job or two while 100,000 files are scanned.
        now = time.time()
        expected = toolkit_listing(jobs_dir, WINDOW, now)
        assert dict(fs.changed_since(now - WINDOW)) == expected
        for store in stores.values():
            assert dict(store.changed_since(now - WINDOW)) == expected
        rng = random.Random(1)
        sample = [rng.choice(ids) for _ in range(200)]

        def per_get_us(get: Callable[[str], Any]) -> float:
            total_ms = median_ms(lambda: [get(j) for j in sample], repeat)
            return total_ms * 1000 / len(sample)

        earlier = itertools.count(1)

        def listing_ms(store: Any) -> float:
            # What jobs/status asks of a store: the listing's JSON text, read
            # afresh. Each call's window starts 1 ms before the last one's
            # (from a fixed start: the clock moves faster than that), so no
            # kept listing can answer it -- the cost of a poll after a write.
            listings = Listings(store, timer=time.monotonic)
            start = window()
            return median_ms(
                lambda: listings.json(start - next(earlier) * 1e-3),
                repeat * 4,
            )

        def kept_ms(store: Any) -> float:
            # The same poll again, nothing written since: a kept listing.
            listings = Listings(store, timer=time.monotonic)
            listings.json(window())
            return median_ms(lambda: listings.json(window()), repeat * 4)

        result = {
            "matches": float(len(expected)),
            "list_index_ms": listing_ms(fs),
            "kept_index_ms": kept_ms(fs),
            "list_scan_ms": median_ms(
                lambda: toolkit_listing(jobs_dir, WINDOW), repeat
            ),
            "get_fs_us": per_get_us(fs.get),
            "get_toolkit_us": per_get_us(lambda j: toolkit_get(jobs_dir, j)),
            "build_s": build_s,
            "migrate_s": migrate_s,
        }
        for name in ("sqlite", "redis"):
            store = stores.get(name)
            result[f"list_{name}_ms"] = (
                float("nan") if store is None else listing_ms(store)
            )
            result[f"kept_{name}_ms"] = (
                float("nan") if store is None else kept_ms(store)
            )
            result[f"get_{name}_us"] = (
                float("nan") if store is None else per_get_us(store.get)
            )
        fs.close()
        for store in stores.values():
            store.close()
        if redis_server is not None:
            redis_server[0].terminate()
            redis_server[0].wait()
        result["bytes_per_job"] = index_memory_per_job(root, n)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for n in (int(size) for size in args.sizes.split(",")):
        print(f"building and measuring {n} jobs ...", file=sys.stderr, flush=True)
        rows.append((n, run(n, args.repeat)))

    print_table(rows)


def print_table(rows: list[tuple[int, dict[str, float]]]) -> None:
    columns: list[tuple[str, Callable[[int, dict[str, float]], str]]] = [
        ("jobs", lambda n, r: f"{n:,}"),
        ("matches", lambda n, r: f"{r['matches']:,.0f}"),
        ("list: index", lambda n, r: f"{r['list_index_ms']:.2f} ms"),
        ("list: Toolkit scan", lambda n, r: f"{r['list_scan_ms']:.1f} ms"),
        (
            "scan / index",
            lambda n, r: f"{r['list_scan_ms'] / r['list_index_ms']:,.0f}x",
        ),
        ("list: SQLite", lambda n, r: f"{r['list_sqlite_ms']:.2f} ms"),
        ("get: file store", lambda n, r: f"{r['get_fs_us']:.0f} µs"),
        ("get: Toolkit", lambda n, r: f"{r['get_toolkit_us']:.0f} µs"),
        ("get: SQLite", lambda n, r: f"{r['get_sqlite_us']:.0f} µs"),
        ("list: Redis", lambda n, r: f"{r['list_redis_ms']:.2f} ms"),
        ("get: Redis", lambda n, r: f"{r['get_redis_us']:.0f} µs"),
        ("migrate file → Redis", lambda n, r: f"{r['migrate_s']:.1f} s"),
        (
            "list kept: index / SQLite / Redis",
            lambda n, r: (
                f"{r['kept_index_ms']:.3f} / {r['kept_sqlite_ms']:.3f}"
                f" / {r['kept_redis_ms']:.3f} ms"
            ),
        ),
        ("index build", lambda n, r: f"{r['build_s']:.2f} s"),
        ("index memory", lambda n, r: f"{r['bytes_per_job']:.0f} B/job"),
    ]
    print()
    print("| " + " | ".join(name for name, _ in columns) + " |")
    print("|" + "---:|" * len(columns))
    for n, r in rows:
        print("| " + " | ".join(cell(n, r) for _, cell in columns) + " |")


if __name__ == "__main__":
    main()
