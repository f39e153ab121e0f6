"""Retention: what a purge costs, and what it costs the requests served meanwhile.

Run by hand (not a test):
  python bench/retention.py [--jobs 100000] [--stores sqlite,memory]
  [--clients 8] [--idle 15]

For each store, in one run: a store of ``--jobs`` jobs, half of them ``done``
and stale by the policy ``done=1m,*=off``, half ``running`` (kept), and a
live ``jobstatus serve`` on it. ``--clients`` loops send
``POST /v1/toolkit/job/status`` for random kept jobs without pause, the whole
time; each request is timed and stamped. The real
``jobstatus_core.retention.purge`` then expires the stale half:

- sqlite: in a process of its own (as ``jobstatus purge`` or another
  instance's purger would), after ``--idle`` seconds of load;
- memory: in the server process itself, by the purger thread of ``serve``
  (``JOBSTATUS_RETENTION``), which is the only place it can run. The server
  is started by this file (``--serve-memory``) so that its store can be
  filled first: the stale half is written one minute before it is due, so
  the purge at start finds nothing and a later turn expires it.

Printed: the purge's time, jobs/s and the purging process's peak RSS
(``VmHWM``, reset just before the purge through ``/proc/self/clear_refs``;
for memory the server's, store included, with its RSS before); and p50/p99
of the requests sent while purging against those sent idle before it, with
their ratio (the target: p99 < 2x idle).

Machines are shared and noisy: compare numbers of one run side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from serving import free_port, start_server

KEY = "bench-key"
POLICY = "done=1m,*=off"
DUE_SECONDS = 60.0
#: Requests in the first seconds of a server warm it up; they are left out.
WARMUP = 2.0


def record(job_id: str, status: str) -> dict[str, Any]:
    """A Toolkit record of a typical size (≈ 150 bytes)."""
    return {
        "job_id": job_id,
        "job_status": status,
        "response": f"https://cdn.example/{job_id}.mp4",
        "message": "success",
    }


def job_ids(jobs: int) -> tuple[list[str], list[str]]:
    """(stale, kept): even jobs are done and stale, odd ones running."""
    ids = [f"job-{i:07}" for i in range(jobs)]
    return ids[0::2], ids[1::2]


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak() -> None:
    # Linux: writing 5 resets VmHWM to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")


# -- filling -----------------------------------------------------------------


def fill_sqlite(path: Path, jobs: int, now: float) -> None:
    """Written as ``put`` writes them, in one transaction: the fill is not
    what is measured."""
    from jobstatus_backends.sqlite import PUT_SQL, SQLiteStore

    stale, kept = job_ids(jobs)
    store = SQLiteStore(path)

    def values() -> Iterator[tuple[str, str, float, str]]:
        for ids, status, at in ((stale, "done", now - 86400), (kept, "running", now)):
            for job_id in ids:
                yield job_id, json.dumps(status), at, json.dumps(record(job_id, status))

    conn = store._conn
    conn.execute("BEGIN")
    conn.executemany(PUT_SQL, values())
    conn.execute("COMMIT")
    store.close()


# -- the purging processes ---------------------------------------------------


def purge_child(url: str) -> None:
    """``--purge-child URL``: one purge of the store, as ``jobstatus purge``
    does; prints one JSON line."""
    from jobstatus_backends import store_from_url
    from jobstatus_core.retention import parse_policy, purge

    store = store_from_url(url)
    before = memory_kb("VmRSS")
    reset_peak()
    started = time.time()
    purged = purge(store, parse_policy(POLICY), now=started)
    ended = time.time()
    peak = memory_kb("VmHWM")
    store.close()
    print(json.dumps(stats(purged.total, started, ended, before, peak)), flush=True)


def stats(
    expired: int, started: float, ended: float, rss_kb: int, peak_kb: int
) -> dict[str, float]:
    return {
        "expired": expired,
        "started": started,
        "ended": ended,
        "rss_mb": rss_kb / 1024,
        "peak_mb": peak_kb / 1024,
    }


def serve_memory(jobs: int, port: int) -> None:
    """``--serve-memory N PORT``: ``jobstatus serve`` on ``memory://`` filled
    with N jobs; each purge of its purger thread prints one JSON line."""
    from jobstatus_adapters import cli, purging
    from jobstatus_backends import store_from_url
    from jobstatus_core import Store
    from jobstatus_core.retention import Policy, Purged

    store = store_from_url("memory://")
    stale, kept = job_ids(jobs)
    # Due one minute after the fill started: after the purge at start (the
    # fill takes less), at one of the next turns.
    written = time.time()
    for job_id in stale:
        store.put(record(job_id, "done"), at=written)
    for job_id in kept:
        store.put(record(job_id, "running"))
    print(json.dumps({"filled": time.time() - written}), flush=True)
    real_purge = purging.purge

    def timed_purge(store: Store, policy: Policy, **options: Any) -> Purged:
        before = memory_kb("VmRSS")
        reset_peak()
        started = time.time()
        purged = real_purge(store, policy, **options)
        line = stats(purged.total, started, time.time(), before, memory_kb("VmHWM"))
        print(json.dumps(line), flush=True)
        return purged

    # The one store serve opens is the filled one; the purger's calls are timed.
    cli.store_from_url = lambda url: store  # type: ignore[attr-defined]
    purging.purge = timed_purge  # type: ignore[attr-defined]
    os.environ.update(
        JOBSTATUS_STORE="memory://", JOBSTATUS_RETENTION=POLICY, API_KEY=KEY
    )
    argv = ["serve", "--port", str(port), "--log-level", "warning"]
    sys.exit(cli.main(argv))


# -- load --------------------------------------------------------------------


async def load(
    url: str, kept: list[str], clients: int, until: asyncio.Event
) -> list[tuple[float, float]]:
    """(sent at, seconds) of every request until ``until`` is set."""
    samples: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=clients)

    async with httpx.AsyncClient(
        base_url=url, headers={"x-api-key": KEY}, limits=limits, timeout=60
    ) as http:

        async def one_client(seed: int) -> None:
            rng = random.Random(seed)
            while not until.is_set():
                job_id = rng.choice(kept)
                sent = time.time()
                started = time.perf_counter()
                answer = await http.post(
                    "/v1/toolkit/job/status", json={"job_id": job_id}
                )
                samples.append((sent, time.perf_counter() - started))
                if answer.status_code != 200 or answer.json()["code"] != 200:
                    raise RuntimeError(f"{job_id}: {answer.text[:200]}")

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return samples


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms."""
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def run_sqlite(jobs: int, clients: int, idle: float) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    url = f"sqlite://{directory / 'jobs.db'}"
    started = time.perf_counter()
    fill_sqlite(directory / "jobs.db", jobs, time.time())
    filled = time.perf_counter() - started
    env = {**os.environ, "API_KEY": KEY, "JOBSTATUS_STORE": url}
    env.pop("JOBSTATUS_RETENTION", None)
    process, base = start_server(
        lambda port: [
            "-m",
            "jobstatus_adapters.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=str(directory),
        env=env,
    )
    ready = time.time()
    stop = asyncio.Event()
    try:
        loading = asyncio.create_task(load(base, job_ids(jobs)[1], clients, stop))
        await asyncio.sleep(WARMUP + idle)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--purge-child",
            url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await child.communicate()
        await asyncio.sleep(1.0)  # requests sent during the purge come back
        stop.set()
        samples = await loading
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)
    purge = json.loads(out)
    return summary("sqlite", jobs, filled, purge, [purge], samples, ready)


async def run_memory(jobs: int, clients: int) -> dict[str, Any]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-memory",
        str(jobs),
        str(port),
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        filled = json.loads(await server.stdout.readline())["filled"]
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as http:
            while True:
                try:
                    await http.post("/")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        ready = time.time()
        stop = asyncio.Event()
        loading = asyncio.create_task(load(base, job_ids(jobs)[1], clients, stop))
        # The purge at start found nothing; wait for the turn that expires.
        turns: list[dict[str, float]] = []
        while not turns or not turns[-1]["expired"]:
            line = await server.stdout.readline()
            if not line:
                raise RuntimeError("the server stopped")
            turns.append(json.loads(line))
        await asyncio.sleep(1.0)  # requests sent during the purge come back
        stop.set()
        samples = await loading
    finally:
        server.terminate()
        await server.wait()
    return summary("memory", jobs, filled, turns[-1], turns, samples, ready)


def summary(
    name: str,
    jobs: int,
    filled: float,
    purge: dict[str, float],
    turns: list[dict[str, float]],
    samples: list[tuple[float, float]],
    ready: float,
) -> dict[str, Any]:
    """The purge's figures and the requests' latencies, idle and purging."""

    def during(sent: float, turn: dict[str, float]) -> bool:
        return turn["started"] <= sent <= turn["ended"]

    purging = [s for sent, s in samples if during(sent, purge)]
    idle = [
        s
        for sent, s in samples
        if ready + WARMUP <= sent < purge["started"]
        and not any(during(sent, turn) for turn in turns)
    ]
    seconds = purge["ended"] - purge["started"]
    idle_seconds = purge["started"] - (ready + WARMUP)
    idle_p50, idle_p99 = percentiles(idle)
    busy_p50, busy_p99 = percentiles(purging)
    return {
        "store": name,
        "jobs": jobs,
        "fill s": round(filled, 1),
        "expired": int(purge["expired"]),
        "purge s": round(seconds, 2),
        "jobs/s": round(purge["expired"] / seconds),
        "rss MB": round(purge["rss_mb"]),
        "peak MB": round(purge["peak_mb"]),
        "idle n": len(idle),
        "idle p50 ms": round(idle_p50, 2),
        "idle p99 ms": round(idle_p99, 2),
        "purging n": len(purging),
        "purging p50 ms": round(busy_p50, 2),
        "purging p99 ms": round(busy_p99, 2),
        "p99 ratio": round(busy_p99 / idle_p99, 2),
        "idle req/s": round(len(idle) / idle_seconds),
        "purging req/s": round(len(purging) / seconds),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    names = list(rows[0])
    widths = [max(len(n), *(len(str(r[n])) for r in rows)) for n in names]
    print("  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True)))
    for row in rows:
        cells = (str(row[n]).rjust(w) for n, w in zip(names, widths, strict=True))
        print("  ".join(cells))


def main() -> None:
    if sys.argv[1:2] == ["--purge-child"]:
        purge_child(sys.argv[2])
        return
    if sys.argv[1:2] == ["--serve-memory"]:
        serve_memory(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--stores", default="sqlite,memory")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--idle", type=float, default=15.0)
    args = parser.parse_args()
    rows = []
    for name in args.stores.split(","):
        if name == "sqlite":
            rows.append(asyncio.run(run_sqlite(args.jobs, args.clients, args.idle)))
        elif name == "memory":
            rows.append(asyncio.run(run_memory(args.jobs, args.clients)))
        else:
            raise SystemExit(f"--stores: sqlite or memory, got {name!r}")
        print_table(rows[-1:])
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
