"""Store protocol v2 benchmark: pages, counts, batches and recorder changes.

Run by hand (not a test):

    python bench/protocol.py [--sizes 100000,1000000]
        [--stores memory,sqlite,file,file-fast,redis,postgres,postgres-async]
        [--file-root DIR]

For each store and size: N jobs (statuses mixed, "last written" spread over
30 days), then in one run, medians of repeated calls:

- a page of 100 with a status filter (``Query(statuses={done}, limit=100)``),
  from the start and resumed from the middle of the change order;
- counts by status over the whole store (kept counts) and for a 10-minute
  window;
- a batch of 100 ids and one of 1,000 (``read_many``);
- the old Toolkit listing (``window`` of 600 s) beside them;
- recorder changes per second (queued → running → done on new jobs), in one
  process and in four at once, and in one process through a wrapper that
  hides ``Versioned`` (a read before each swap), side by side.

The stores are filled fast, each its own way, so that 1,000,000 jobs fit in
minutes: SQLite in one transaction, PostgreSQL by ``COPY`` (its trigger off,
the counts and head set after), Redis through a pipeline of its write
script, the file store by plain writes (no flush) before the store opens
and indexes them. The fill is not what is measured.

Machines are shared and noisy: compare medians within one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jobstatus_backends import store_from_url
from jobstatus_backends.recorder import Recorder
from jobstatus_core import Store, jsontext
from jobstatus_core.rows import Query
from jobstatus_core.wrapping import StoreWrapper

DAY = 86400.0
STATUSES = ("queued", "running", "done", "done", "done", "failed")


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def records(n: int, now: float) -> Iterator[tuple[dict[str, Any], float]]:
    """N jobs, statuses mixed, 1% written in the last 10 minutes."""
    rng = random.Random(7)
    for i in range(n):
        at = now - 600 * rng.random() if i % 100 == 0 else now - 30 * DAY * rng.random()
        record = {
            "job_id": f"job-{i:07}",
            "job_status": STATUSES[i % len(STATUSES)],
            "queue_id": 1,
            "process_id": 1,
            "response": {"file_url": f"https://example.com/{i}.mp4"},
        }
        yield record, at


def fill(kind: str, url: str, n: int, now: float) -> float:
    """Fill the store at ``url`` with ``records(n)``; seconds taken."""
    start = time.perf_counter()
    if kind == "sqlite":
        fill_sqlite(url, n, now)
    elif kind.startswith("postgres"):
        fill_postgres(url, n, now)
    elif kind == "redis":
        fill_redis(url, n, now)
    elif kind.startswith("file"):
        fill_files(url.split("?")[0], n, now)
    return time.perf_counter() - start


def fill_sqlite(url: str, n: int, now: float) -> None:
    import sqlite3

    from jobstatus_backends.sqlite import PUT_SQL

    store_from_url(url).close()  # the schema, with its triggers
    conn = sqlite3.connect(url.removeprefix("sqlite://"))
    with conn:  # one transaction
        conn.executemany(
            PUT_SQL,
            (
                (r["job_id"], jsontext.encode(r["job_status"]), at, json.dumps(r))
                for r, at in records(n, now)
            ),
        )
    conn.close()


def fill_postgres(url: str, n: int, now: float) -> None:
    import psycopg

    store = store_from_url(url)
    store.mark()  # the schema
    sql = store._sql  # type: ignore[attr-defined]
    store.close()
    trigger = f'"{sql.table}_changed"'
    with psycopg.connect(url) as conn:
        conn.execute(f"ALTER TABLE {sql.jobs_table} DISABLE TRIGGER {trigger}")
        columns = "job_id, job_status, updated_at, record, position"
        with conn.cursor().copy(
            f"COPY {sql.jobs_table} ({columns}) FROM STDIN"
        ) as copy:
            for position, (r, at) in enumerate(records(n, now), 1):
                status = jsontext.encode(r["job_status"])
                copy.write_row((r["job_id"], status, at, json.dumps(r), position))
        conn.execute(f"ALTER TABLE {sql.jobs_table} ENABLE TRIGGER {trigger}")
        conn.execute(
            f"INSERT INTO {sql.counts_table} (status, n) SELECT job_status,"
            f" count(*) FROM {sql.jobs_table} WHERE job_status IS NOT NULL"
            " GROUP BY job_status"
        )
        conn.execute(f"UPDATE {sql.meta_table} SET head = %s", (n,))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {sql.jobs_table}")


def fill_redis(url: str, n: int, now: float) -> None:
    import redis

    from jobstatus_backends.redisscripts import WRITE_SCRIPT

    store: Any = store_from_url(url)
    # A client of its own: the store's answers within a second, and a
    # pipeline of thousands of scripts takes longer.
    client = redis.Redis.from_url(url.split("?")[0], socket_timeout=300)
    script = client.register_script(WRITE_SCRIPT)
    pipe = client.pipeline(transaction=False)
    for i, (r, at) in enumerate(records(n, now)):
        if i == 0:
            store.put(r, at=at)  # the layout, the epoch
            continue
        job_id = r["job_id"]
        # The arguments the store's own ``_write`` passes to its script.
        keys = [store._key(job_id), *store._change_keys]
        status = jsontext.encode(r["job_status"])
        args = [job_id, json.dumps(r), status, repr(at), secrets.token_hex(8)]
        args += [store._status_sets, "put", "", store._channel, store._time_sets]
        script(keys=keys, args=args, client=pipe)
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    client.close()
    store.close()


def fill_files(url: str, n: int, now: float) -> None:
    jobs = Path(url.removeprefix("file://")) / "jobs"
    for r, at in records(n, now):
        fd = os.open(jobs / f"{r['job_id']}.json", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, json.dumps(r).encode())
        os.utime(fd, (at, at))
        os.close(fd)


def record_changes(url: str | Store, seconds: float, tag: str) -> int:
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


def measure(
    kind: str, url: str, n: int, seconds: float, *, filled: bool = False
) -> dict[str, Any]:
    """``filled``: the store at ``url`` holds its jobs already (``--file-root``):
    ids are sampled from it and nothing is written to it."""
    now = time.time()
    row: dict[str, Any] = {"store": kind, "jobs": n}
    if filled:
        row["fill s"] = 0.0
        start = time.perf_counter()
        store = store_from_url(url)
        store.mark()
        row["open s"] = time.perf_counter() - start
    elif kind == "memory":
        store = store_from_url(url)
        start = time.perf_counter()
        # In time order: its time index is a sorted list, and a put at a
        # random time inserts in its middle (1,000,000 of those take hours).
        for record, at in sorted(records(n, now), key=lambda pair: pair[1]):
            store.put(record, at=at)
        row["fill s"] = time.perf_counter() - start
        row["open s"] = 0.0
    else:
        row["fill s"] = fill(kind, url, n, now)
        start = time.perf_counter()
        store = store_from_url(url)
        store.mark()
        row["open s"] = time.perf_counter() - start
    done = frozenset({jsontext.encode("done")})
    middle = store.mark().head // 2
    if filled:
        root = Path(url.removeprefix("file://"))
        names = [
            name[:-5] for name in os.listdir(root / "jobs") if name.endswith(".json")
        ]
        n = row["jobs"] = len(names)
        ids_1000 = random.Random(1).sample(names, min(1000, n))
    else:
        sample = random.Random(1).sample(range(n), min(1000, n))
        ids_1000 = [f"job-{i:07}" for i in sample]
    ids = ids_1000[:100]
    row["page 100 ms"] = median_ms(lambda: store.page(Query(done, None, 0, 101)), 21)
    row["page resumed ms"] = median_ms(
        lambda: store.page(Query(done, None, middle, 101)), 21
    )
    row["counts ms"] = median_ms(lambda: store.counts(None, None), 21)
    row["counts 10 min ms"] = median_ms(lambda: store.counts(None, now - 600), 11)
    row["batch 100 ms"] = median_ms(lambda: store.read_many(ids), 21)
    row["batch 1,000 ms"] = median_ms(lambda: store.read_many(ids_1000), 11)
    row["listing 600 s ms"] = median_ms(lambda: store.window(now - 600), 11)
    if filled:
        pass  # another program's store: not written to
    elif kind != "memory":
        hidden = StoreWrapper(store_from_url(url))
        row["rec/s read+swap"] = record_changes(hidden, seconds, "read") / seconds
        hidden.close()
        row["rec/s 1 proc"] = record_changes(url, seconds, "one") / seconds
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            counts = pool.map(_worker, [(url, seconds, f"p{i}") for i in range(4)])
        row["rec/s 4 procs"] = sum(counts) / seconds
    else:
        hidden = StoreWrapper(store)
        row["rec/s read+swap"] = record_changes(hidden, seconds, "read") / seconds
        row["rec/s 1 proc"] = record_changes(store, seconds, "one") / seconds
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


def start_postgres(directory: Path, *settings: str) -> tuple[Callable[[], None], str]:
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
    options += "".join(f" -c {setting}" for setting in settings)
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
    parser.add_argument(
        "--stores",
        default="memory,sqlite,file,file-fast,redis,postgres,postgres-async",
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--file-root",
        help="the file store: this Toolkit store (ROOT/jobs), as it is, instead"
        " of one filled here (its size is its own; no recorder rows)",
    )
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
                elif kind == "file" and args.file_root:
                    rows.append(
                        measure(kind, f"file://{args.file_root}", n, 0, filled=True)
                    )
                    print(rows[-1], file=sys.stderr, flush=True)
                    continue
                elif kind in ("file", "file-fast"):
                    # file-fast: ?durable=off, no flush before each rename.
                    (directory / "jobs").mkdir()
                    url = f"file://{directory}"
                    url += "?durable=off" if kind == "file-fast" else ""
                elif kind == "redis":
                    if shutil.which("redis-server") is None:
                        print(
                            "redis-server not installed: skipping redis",
                            file=sys.stderr,
                        )
                        continue
                    server, url = start_redis(directory)
                elif kind in ("postgres", "postgres-async"):
                    # postgres-async: the same server with synchronous_commit
                    # off (a commit does not wait for its WAL flush).
                    settings = ["synchronous_commit=off"] if kind != "postgres" else []
                    try:
                        stop_postgres, url = start_postgres(directory, *settings)
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
