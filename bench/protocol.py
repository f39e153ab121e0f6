"""Store protocol v2 benchmark: pages, counts, batches and recorder changes.

Run by hand (not a test):

    python bench/protocol.py [--sizes 100000,1000000]
        [--stores memory,sqlite,file,redis,postgres]

For each store and size: N jobs (statuses mixed, "last written" spread over
30 days), then in one run, medians of repeated calls:

- a page of 100 with a status filter (``Query(statuses={done}, limit=100)``),
  from the start and resumed from the middle of the change order;
- counts by status over the whole store (kept counts) and for a 10-minute
  window;
- a batch of 1,000 ids (``read_many``);
- the old Toolkit listing (``window`` of 600 s) beside them;
- recorder changes per second (queued → running → done on new jobs), in one
  process and in four at once.

Machines are shared and noisy: compare medians within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobstatus_backends import store_from_url
from jobstatus_backends.recorder import Recorder
from jobstatus_core import Store, jsontext
from jobstatus_core.rows import Query

DAY = 86400.0
STATUSES = ("queued", "running", "done", "done", "done", "failed")


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def fill(store: Store, n: int, now: float) -> float:
    rng = random.Random(7)
    start = time.perf_counter()
    for i in range(n):
        at = now - 600 * rng.random() if i % 100 == 0 else now - 30 * DAY * rng.random()
        store.put(
            {
                "job_id": f"job-{i:07}",
                "job_status": STATUSES[i % len(STATUSES)],
                "queue_id": 1,
                "process_id": 1,
                "response": {"file_url": f"https://example.com/{i}.mp4"},
            },
            at=at,
        )
    return time.perf_counter() - start


def record_changes(url: str, seconds: float, tag: str) -> int:
    recorder = Recorder(url)
    done = 0
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        job_id = f"rec-{tag}-{i}"
        recorder.queued(job_id)
        recorder.running(job_id)
        recorder.done(job_id, {"ok": True})
        done += 3
        i += 1
    recorder.close()
    return done


def _worker(args: tuple[str, float, str]) -> int:
    return record_changes(*args)


def measure(kind: str, url: str, n: int, seconds: float) -> dict[str, Any]:
    store = store_from_url(url)
    now = time.time()
    filled = fill(store, n, now)
    done = frozenset({jsontext.encode("done")})
    middle = store.mark().head // 2
    ids = [f"job-{i:07}" for i in random.Random(1).sample(range(n), min(1000, n))]
    row: dict[str, Any] = {"store": kind, "jobs": n, "fill s": filled}
    row["page 100 ms"] = median_ms(lambda: store.page(Query(done, None, 0, 101)), 21)
    row["page resumed ms"] = median_ms(
        lambda: store.page(Query(done, None, middle, 101)), 21
    )
    row["counts ms"] = median_ms(lambda: store.counts(None, None), 21)
    row["counts 10 min ms"] = median_ms(lambda: store.counts(None, now - 600), 11)
    row["batch 1000 ms"] = median_ms(lambda: store.read_many(ids), 11)
    row["listing 600 s ms"] = median_ms(lambda: store.window(now - 600), 11)
    if kind != "memory":
        row["rec/s 1 proc"] = record_changes(url, seconds, "one") / seconds
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            counts = pool.map(_worker, [(url, seconds, f"p{i}") for i in range(4)])
        row["rec/s 4 procs"] = sum(counts) / seconds
    else:
        recorder = Recorder(store)
        start = time.perf_counter()
        for i in range(3000):
            recorder.queued(f"m{i}")
        row["rec/s 1 proc"] = 3000 / (time.perf_counter() - start)
        row["rec/s 4 procs"] = float("nan")
    store.close()
    return row


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = 6390 + os.getpid() % 500
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return server, f"redis://127.0.0.1:{port}/0"


def start_postgres(directory: Path) -> tuple[Callable[[], None], str]:
    """A throwaway PostgreSQL cluster (trust auth, loopback); as root it runs
    as the ``postgres`` user, since initdb refuses root."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise FileNotFoundError("initdb")
    bin_dir = found[-1].parent
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if prefix:
        shutil.chown(directory, "postgres")
    data, port = directory / "data", 6500 + os.getpid() % 500
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "bench"]
    subprocess.run(
        [*prefix, *initdb, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
    # Durable as a default server is (fsync on): the figures are a real one's.
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(directory / "log"), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )

    def stop() -> None:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], stdout=subprocess.DEVNULL)

    return stop, f"postgresql://bench@127.0.0.1:{port}/postgres"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--stores", default="memory,sqlite,file,redis,postgres")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rows = []
    for n in [int(size) for size in args.sizes.split(",")]:
        for kind in args.stores.split(","):
            directory = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
            server = None
            stop_postgres: Callable[[], None] | None = None
            try:
                if kind == "memory":
                    url = "memory://"
                elif kind == "sqlite":
                    url = f"sqlite://{directory / 'jobs.db'}"
                elif kind == "file":
                    (directory / "jobs").mkdir()
                    url = f"file://{directory}"
                elif kind == "redis":
                    if shutil.which("redis-server") is None:
                        print(
                            "redis-server not installed: skipping redis",
                            file=sys.stderr,
                        )
                        continue
                    server, url = start_redis(directory)
                elif kind == "postgres":
                    try:
                        stop_postgres, url = start_postgres(directory)
                    except FileNotFoundError:
                        print(
                            "PostgreSQL not installed: skipping postgres",
                            file=sys.stderr,
                        )
                        continue
                else:
                    raise SystemExit(f"unknown store {kind}")
                rows.append(measure(kind, url, n, args.seconds))
                print(rows[-1], file=sys.stderr, flush=True)
            finally:
                if server is not None:
                    server.terminate()
                    server.wait()
                if stop_postgres is not None:
                    stop_postgres()
                shutil.rmtree(directory, ignore_errors=True)
    columns = list(rows[0]) if rows else []
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [
            f"{value:,.3f}"
            if isinstance(value, float) and value < 100
            else f"{value:,.0f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int)
            else str(value)
            for value in row.values()
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
