"""Redis retention benchmark: bytes per tombstone, and stale + expire speed.

Run by hand (not a test):  python bench/redis_expiry.py [--jobs 100000]

Starts a redis-server of its own (no persistence) on a free port, then:

- writes 10,000 jobs, expires them all and reports the memory of the three
  tombstone keys (``MEMORY USAGE ... SAMPLES 0``) per tombstone, and
  ``used_memory`` before and after forgetting them all;
- writes ``--jobs`` jobs (50% done, 10% failed, 40% running, "last written"
  spread over 30 days) and purges them in batches of 1,000: ``stale`` then
  ``expire`` until nothing is stale, first ``failed`` (a status of few jobs
  among many older ones of others), then every status but ``running``.
  Prints per-batch medians and jobs/s.

The stores get a 30 s timeout: a batch of 1,000 is one script, which a
loaded machine can stretch past the default 1 s.

Machines are shared and noisy: compare medians, and rows of one run.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

from jobstatus_backends.redis import RedisStore
from jobstatus_core import Stale

DAY = 86_400.0
NOW = 1_700_000_000.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return process, url


def fill(store: RedisStore, statuses: list[tuple[str, float]], n: int) -> None:
    rng = random.Random(7)
    names = [name for name, _ in statuses]
    weights = [weight for _, weight in statuses]
    for i in range(n):
        status = rng.choices(names, weights)[0]
        store.put(
            {"job_id": f"job-{i:07}", "job_status": status},
            at=NOW - rng.uniform(0, 30 * DAY),
        )


def tombstone_bytes(url: str) -> None:
    raw = redis.Redis.from_url(url, decode_responses=True)
    store = RedisStore.from_url(url + "?prefix=tombs:&timeout=30")
    n = 10_000
    fill(store, [("done", 1.0)], n)
    jobs_before = raw.info("memory")["used_memory"]
    while rows := store.stale(Stale(before=NOW, limit=1000)):
        store.expire(rows, at=NOW)
    keys = ["tombs:tombstones", "tombs:buried", "tombs:expired"]
    usage = sum(raw.memory_usage(key, samples=0) or 0 for key in keys)
    with_tombstones = raw.info("memory")["used_memory"]
    assert store.forget(before=NOW + 1, limit=n) == n
    without = raw.info("memory")["used_memory"]
    print(f"{n:,} tombstones")
    print("| measure | bytes | per tombstone |")
    print("|---|---|---|")
    print(f"| MEMORY USAGE of the 3 keys | {usage:,} | {usage / n:.0f} |")
    delta = with_tombstones - without
    print(f"| used_memory, before/after forget | {delta:,} | {delta / n:.0f} |")
    print(
        f"| used_memory, {n:,} jobs -> {n:,} tombstones | "
        f"{jobs_before - with_tombstones:,} freed | "
        f"{(jobs_before - with_tombstones) / n:.0f} freed |"
    )
    store.close()
    raw.close()


def purge(store: RedisStore, query: Stale) -> tuple[int, list[float], list[float]]:
    stale_s: list[float] = []
    expire_s: list[float] = []
    expired = 0
    while True:
        started = time.perf_counter()
        rows = store.stale(query)
        stale_s.append(time.perf_counter() - started)
        if not rows:
            return expired, stale_s, expire_s
        started = time.perf_counter()
        expired += len(store.expire(rows, at=NOW))
        expire_s.append(time.perf_counter() - started)


def speed(url: str, jobs: int) -> None:
    raw = redis.Redis.from_url(url, decode_responses=True)
    store = RedisStore.from_url(url + "?prefix=speed:&timeout=30")
    fill(store, [("done", 0.5), ("failed", 0.1), ("running", 0.4)], jobs)
    times = sum(
        raw.memory_usage(
            "speed:updated:" + hashlib.sha1(status.encode()).hexdigest(), samples=0
        )
        or 0
        for status in ('"done"', '"failed"', '"running"')
    )
    print(f"\n{jobs:,} jobs; time sets per status: {times / jobs:.0f} bytes per job")
    print("| purge (batches of 1,000) | jobs | stale p50 | expire p50 | jobs/s |")
    print("|---|---|---|---|---|")
    rules = [
        ("failed, older than 1 day", Stale(NOW - DAY, frozenset({'"failed"'}))),
        (
            "all but running, older than 1 day",
            Stale(NOW - DAY, None, frozenset({'"running"'})),
        ),
    ]
    for name, query in rules:
        started = time.perf_counter()
        expired, stale_s, expire_s = purge(store, query)
        elapsed = time.perf_counter() - started
        print(
            f"| {name} | {expired:,} | {statistics.median(stale_s) * 1000:.1f} ms"
            f" | {statistics.median(expire_s) * 1000:.1f} ms"
            f" | {expired / elapsed:,.0f} |"
        )
    store.close()
    raw.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_redis(tmp)
        try:
            tombstone_bytes(url)
            speed(url, args.jobs)
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
