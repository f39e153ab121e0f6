"""Live benchmark: what waiting and the feed save against polling, and how
fast a change reaches its subscribers.

Run by hand (not a test):  python bench/live.py [--clients 1000] [--seconds 60]

1. The headline: N clients each wait for one of N jobs, which finish evenly
   over S seconds — by polling ``POST /v1/toolkit/job/status`` every second,
   by long-polling ``GET /v1/job/{id}?wait=30``, and by the per-job feed
   ``GET /v1/job/{id}/events``. Requests sent and the server's CPU seconds
   (from /proc), side by side in one run.
2. Wake-up latency: 1, 100 and N subscribers of the feed, on one server
   and, with Redis installed, across two servers sharing one Redis. "one job":
   all follow one job, which changes once — the time until each has the
   event. "own jobs": each follows a job of its own, and 50 of those jobs
   change one after another — the time until each change reaches its
   subscriber while the others wait. p50 and p99.

One ``jobstatus serve`` (uvicorn, SQLite store) per mode; clients in this
process on asyncio. The machine is shared and noisy: compare within a run.
``--baseline DIR`` runs every measure twice, side by side: on this code and
on the one whose packages DIR holds (``jobstatus_core``, ``jobstatus_adapters``
… as importable directories, e.g. symlinks into a checkout of another commit).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from serving import free_port, start_server

from jobstatus_backends.recorder import Recorder

KEY = "bench-key"


#: Changes timed one by one in the "own jobs" latency measure.
PROBES = 50


def serve(
    store: str, directory: str, code: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``code``: a directory of packages to run instead of this checkout's."""
    env = {**os.environ, "API_KEY": KEY, "JOBSTATUS_STORE": store}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [code, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    env["JOBSTATUS_MAX_WAITERS"] = env["JOBSTATUS_MAX_STREAMS"] = "5000"
    return start_server(
        lambda port: [
            "-m",
            "jobstatus_adapters.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=directory,
        env=env,
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def finish_jobs(store: str, ids: list[str], seconds: float) -> None:
    recorder = Recorder(store)
    step = seconds / len(ids)
    start = time.monotonic()
    for i, job_id in enumerate(ids):
        await asyncio.sleep(max(0.0, start + i * step - time.monotonic()))
        await asyncio.to_thread(recorder.done, job_id, {"i": i})
    recorder.close()


async def poll(http: httpx.AsyncClient, job_id: str, counter: list[int]) -> None:
    while True:
        counter[0] += 1
        answer = await http.post("/v1/toolkit/job/status", json={"job_id": job_id})
        if answer.json()["response"]["job_status"] == "done":
            return
        await asyncio.sleep(1.0)


async def long_poll(http: httpx.AsyncClient, job_id: str, counter: list[int]) -> None:
    while True:
        counter[0] += 1
        answer = await http.get(f"/v1/job/{job_id}", params={"wait": 30})
        if answer.json()["response"]["job_status"] == "done":
            return


async def feed(http: httpx.AsyncClient, job_id: str, counter: list[int]) -> None:
    counter[0] += 1
    async with http.stream("GET", f"/v1/job/{job_id}/events") as response:
        async for _ in response.aiter_lines():
            pass  # the stream ends after the terminal status


async def headline(
    mode: str, clients: int, seconds: float, code: str | None
) -> dict[str, object]:
    directory = tempfile.mkdtemp(prefix="bench-live-")
    store = f"sqlite://{directory}/jobs.db"
    ids = [f"job-{i}" for i in range(clients)]
    recorder = Recorder(store)
    for job_id in ids:
        recorder.running(job_id)
    recorder.close()
    process, url = serve(store, directory, code)
    counter = [0]
    client = {"poll": poll, "wait": long_poll, "feed": feed}[mode]
    limits = httpx.Limits(max_connections=clients + 10)
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"x-api-key": KEY}, limits=limits, timeout=120
        ) as http:
            before = cpu_seconds(process.pid)
            await asyncio.gather(
                finish_jobs(store, ids, seconds),
                *(client(http, job_id, counter) for job_id in ids),
            )
            cpu = cpu_seconds(process.pid) - before
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)
    return {"mode": mode, "requests": counter[0], "server cpu s": round(cpu, 2)}


async def latency(subscribers: int, store: str, urls: list[str]) -> list[float]:
    """Feed subscribers of one job spread over ``urls``; one change; the
    delays until each has the event, in seconds."""
    arrived: list[float] = []
    ready = asyncio.Event()
    opened = [0]
    limits = httpx.Limits(max_connections=subscribers + 10)
    async with httpx.AsyncClient(
        headers={"x-api-key": KEY}, limits=limits, timeout=60
    ) as http:

        async def subscribe(url: str) -> None:
            async with http.stream("GET", url + "/v1/job/probe/events") as response:
                opened[0] += 1
                if opened[0] == subscribers:
                    ready.set()
                async for line in response.aiter_lines():
                    if line.startswith("data:") and '"done"' in line:
                        arrived.append(time.perf_counter())
                        return

        tasks = [
            asyncio.ensure_future(subscribe(urls[i % len(urls)]))
            for i in range(subscribers)
        ]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1.0)  # every stream has sent its first state
        recorder = Recorder(store)
        changed = time.perf_counter()
        await asyncio.to_thread(recorder.done, "probe")
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        recorder.close()
    return [t - changed for t in arrived]


async def own_latency(subscribers: int, store: str, urls: list[str]) -> list[float]:
    """Each subscriber follows a job of its own (spread over ``urls``);
    ``PROBES`` of the jobs finish one after another; the delay of each until
    its subscriber has the event, in seconds."""
    ids = [f"own-{i}" for i in range(subscribers)]
    recorder = Recorder(store)
    for job_id in ids:
        recorder.running(job_id)
    arrived = {job_id: asyncio.Event() for job_id in ids}
    opened = [0]
    ready = asyncio.Event()
    limits = httpx.Limits(max_connections=subscribers + 10)
    delays: list[float] = []
    async with httpx.AsyncClient(
        headers={"x-api-key": KEY}, limits=limits, timeout=60
    ) as http:

        async def subscribe(url: str, job_id: str) -> None:
            async with http.stream("GET", f"{url}/v1/job/{job_id}/events") as response:
                opened[0] += 1
                if opened[0] == subscribers:
                    ready.set()
                async for line in response.aiter_lines():
                    if line.startswith("data:") and '"done"' in line:
                        arrived[job_id].set()
                        return

        tasks = [
            asyncio.ensure_future(subscribe(urls[i % len(urls)], job_id))
            for i, job_id in enumerate(ids)
        ]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1.0)  # every stream has sent its first state
        step = max(1, subscribers // PROBES)
        for job_id in ids[::step][:PROBES]:
            changed = time.perf_counter()
            await asyncio.to_thread(recorder.done, job_id)
            await asyncio.wait_for(arrived[job_id].wait(), 30)
            delays.append(time.perf_counter() - changed)
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    recorder.close()
    return delays


def percentiles(delays: list[float]) -> tuple[float, float]:
    ordered = sorted(delays)
    p99 = ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]
    return statistics.median(ordered), p99


async def latencies(
    clients: int, codes: dict[str, str | None]
) -> list[dict[str, object]]:
    rows = []
    setups: list[tuple[str, str, int]] = [("sqlite", "one server", 1)]
    redis = shutil.which("redis-server")
    port = free_port()
    server = None
    if redis:
        server = subprocess.Popen(
            [redis, "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        setups += [("redis", "one server", 1), ("redis", "two servers", 2)]
    measures = {"one job": latency, "own jobs": own_latency}
    try:
        for kind, where, instances in setups:
            for pattern, measure in measures.items():
                for subscribers in (1, 100, clients):
                    if pattern == "own jobs" and subscribers == 1:
                        continue  # the same as "one job"
                    for name, code in codes.items():
                        directory = tempfile.mkdtemp(prefix="bench-latency-")
                        store = (
                            f"sqlite://{directory}/jobs.db"
                            if kind == "sqlite"
                            else f"redis://127.0.0.1:{port}/0"
                            f"?prefix={os.path.basename(directory)}:"
                        )
                        recorder = Recorder(store)
                        recorder.running("probe")
                        recorder.close()
                        servers = [
                            serve(store, directory, code) for _ in range(instances)
                        ]
                        try:
                            delays = await measure(
                                subscribers, store, [url for _, url in servers]
                            )
                        finally:
                            for process, _ in servers:
                                process.terminate()
                                process.wait()
                            shutil.rmtree(directory, ignore_errors=True)
                        p50, p99 = percentiles(delays)
                        rows.append(
                            {
                                "store": kind,
                                "where": where,
                                "follow": pattern,
                                "subscribers": subscribers,
                                "code": name,
                                "p50 ms": round(p50 * 1000, 1),
                                "p99 ms": round(p99 * 1000, 1),
                            }
                        )
                        print(rows[-1], file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.terminate()
    return rows


def table(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-headline", action="store_true")
    parser.add_argument(
        "--baseline", help="a directory of the packages of the code to compare with"
    )
    args = parser.parse_args()
    codes: dict[str, str | None] = {"this": None}
    if args.baseline:
        codes = {"baseline": os.path.abspath(args.baseline), **codes}
    if not args.skip_headline:
        rows = []
        for mode in ("poll", "wait", "feed"):
            for name, code in codes.items():
                row = asyncio.run(headline(mode, args.clients, args.seconds, code))
                rows.append({"code": name, **row})
                print(rows[-1], file=sys.stderr, flush=True)
        for row in rows:
            polled = next(
                r for r in rows if r["code"] == row["code"] and r["mode"] == "poll"
            )
            row["requests vs polling"] = f"{row['requests'] / polled['requests']:.3f}"  # type: ignore[operator]
            row["cpu vs polling"] = (
                f"{row['server cpu s'] / max(polled['server cpu s'], 0.01):.3f}"  # type: ignore[operator]
            )
        print(table(rows))
    if not args.skip_latency:
        print()
        print(table(asyncio.run(latencies(args.clients, codes))))


if __name__ == "__main__":
    main()
