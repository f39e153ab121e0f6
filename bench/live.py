"""Live benchmark: what waiting and the feed save against polling, and how
fast a change reaches its subscribers.

Run by hand (not a test):  python bench/live.py [--clients 1000] [--seconds 60]

1. The headline: N clients each wait for one of N jobs, which finish evenly
   over S seconds — by polling ``POST /v1/toolkit/job/status`` every second,
   by long-polling ``GET /v1/job/{id}?wait=30``, and by the per-job feed
   ``GET /v1/job/{id}/events``. Requests sent and the server's CPU seconds
   (from /proc), side by side in one run.
2. Wake-up latency: 1, 100 and N subscribers of the feed: in-process (a
   ``memory://`` server that records the change itself,
   bench/live_inprocess.py), on one server of a store another process writes
   and, with Redis installed, across two servers sharing one Redis. "one job":
   all follow one job, which changes once — the time until each has the
   event. "own jobs": each follows a job of its own, and 50 of those jobs
   change one after another — the time until each change reaches its
   subscriber while the others wait. p50 and p99.

One ``jobstatus serve`` (uvicorn, SQLite store) per mode. The headline's
clients are httpx in this process; the latency subscribers are raw
connections in ``FOLLOWERS`` processes on uvloop (a Python process reading
1,000 streams through httpx costs as much CPU as the server), timed with
``time.monotonic()``, which is system-wide on Linux; their CPU and the
server's are reported for "one job". The machine is shared and noisy:
compare within a run.
``--baseline DIR`` runs every measure twice, side by side: on this code and
on the one whose packages DIR holds (``jobstatus_core``, ``jobstatus_adapters``
… as importable directories, e.g. symlinks into a checkout of another commit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.process
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple, cast

import httpx
from serving import free_port, start_server

from jobstatus_backends.recorder import Recorder

KEY = "bench-key"


#: Changes timed one by one in the "own jobs" latency measure.
PROBES = 50

#: A running ``jobstatus serve``: its process and base URL.
Server = tuple[subprocess.Popen[bytes], str]


class Measured(NamedTuple):
    delays: list[float]
    #: CPU seconds from the change until the last event arrived (one job).
    server_cpu: float | None
    client_cpu: float | None


def serve(
    store: str, directory: str, code: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``code``: a directory of packages to run instead of this checkout's.
    ``memory://``: bench/live_inprocess.py, which records changes itself."""
    env = {**os.environ, "API_KEY": KEY, "JOBSTATUS_STORE": store}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [code, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    env["JOBSTATUS_MAX_WAITERS"] = env["JOBSTATUS_MAX_STREAMS"] = "5000"
    if store.startswith("memory:"):
        script = str(Path(__file__).resolve().parent / "live_inprocess.py")
        return start_server(lambda port: [script, str(port)], cwd=directory, env=env)
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


#: Client processes the latency measures spread their subscribers over: one
#: Python process reading 1,000 streams costs as much CPU as the server
#: sending them, and would measure itself.
FOLLOWERS = 2


class _Follower(asyncio.Protocol):
    """One feed subscriber on a raw connection: sends the request, then only
    looks for its first event and for the terminal one (no HTTP or SSE
    parsing beyond that)."""

    def __init__(self, request: bytes, ready: asyncio.Event, left: list[int]) -> None:
        self.request = request
        self.ready = ready
        self.left = left
        self.tail = b""
        self.started = False
        self.arrived: float | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        seen = self.tail + data
        if not self.started and b"\ndata:" in seen:
            self.started = True
            self.left[0] -= 1
            if not self.left[0]:
                self.ready.set()
        if b'"job_status":"done"' in seen:
            self.arrived = time.monotonic()
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
        self.tail = seen[-32:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _follow(targets: list[tuple[str, str]], conn: Connection, each: bool) -> None:
    """Open a stream per (base URL, job id); tell ``conn`` when every one has
    its first event, then the monotonic times the terminal events arrived:
    one message per arrival when ``each``, else all at once."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    left = [len(targets)]
    followers = []
    for url, job_id in targets:
        host, port = url.removeprefix("http://").split(":")
        request = (
            f"GET /v1/job/{job_id}/events HTTP/1.1\r\nhost: {host}\r\n"
            f"x-api-key: {KEY}\r\naccept: text/event-stream\r\n\r\n"
        ).encode()
        follower = _Follower(request, ready, left)
        await loop.create_connection(lambda f=follower: f, host, int(port))  # type: ignore[misc]
        followers.append((job_id, follower))
    await asyncio.wait_for(ready.wait(), 60)
    conn.send(("ready", None))
    cpu = time.process_time()
    if each:
        pending = {follower.done: job_id for job_id, follower in followers}
        while pending:
            finished, _ = await asyncio.wait(
                pending, return_when=asyncio.FIRST_COMPLETED
            )
            for future in finished:
                job_id = pending.pop(future)
                arrived = dict(followers)[job_id].arrived
                conn.send(("arrived", (job_id, arrived)))
    else:
        await asyncio.wait_for(asyncio.gather(*(f.done for _, f in followers)), 60)
        conn.send(("arrived", [f.arrived for _, f in followers]))
    conn.send(("cpu", time.process_time() - cpu))


def _follower_process(
    targets: list[tuple[str, str]], conn: Connection, each: bool
) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_follow(targets, conn, each))


def _start_followers(
    targets: list[tuple[str, str]], each: bool
) -> list[tuple[multiprocessing.process.BaseProcess, Connection]]:
    """``FOLLOWERS`` processes sharing ``targets``, each ready to stream."""
    context = multiprocessing.get_context("spawn")
    started: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    for part in range(FOLLOWERS):
        mine = targets[part::FOLLOWERS]
        if not mine:
            continue
        ours, theirs = context.Pipe()
        process = context.Process(target=_follower_process, args=(mine, theirs, each))
        process.start()
        started.append((process, ours))
    for _, conn in started:
        if not conn.poll(90):
            raise RuntimeError("the subscribers did not open their streams")
        assert conn.recv()[0] == "ready"
    time.sleep(1.0)  # every stream has sent its first state
    return started


class Changes:
    """Records job states and tells the ``time.monotonic()`` of each change:
    through a Recorder of the store, or for ``memory://`` (which only its
    server sees) through the in-process server's own route."""

    def __init__(self, store: str, servers: list[Server]) -> None:
        self.url = servers[0][1] if store.startswith("memory:") else None
        self.recorder = None if self.url else Recorder(store)

    def __call__(self, state: str, job_id: str) -> float:
        if self.recorder is None:
            return float(httpx.post(f"{self.url}/bench/{state}/{job_id}").text)
        record = {"running": self.recorder.running, "done": self.recorder.done}
        changed = time.monotonic()
        record[state](job_id)
        return changed

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def latency(subscribers: int, store: str, servers: list[Server]) -> Measured:
    """Feed subscribers of one job spread over ``servers``; one change; the
    delays until each has the event, in seconds."""
    targets = [(servers[i % len(servers)][1], "probe") for i in range(subscribers)]
    started = _start_followers(targets, each=False)
    change = Changes(store, servers)
    before = sum(cpu_seconds(process.pid) for process, _ in servers)
    changed = change("done", "probe")
    delays = []
    for _, conn in started:
        delays += [t - changed for t in conn.recv()[1]]
    server_cpu = sum(cpu_seconds(process.pid) for process, _ in servers) - before
    client_cpu = 0.0
    for process, conn in started:
        client_cpu += conn.recv()[1]
        process.join(10)
    change.close()
    return Measured(delays, server_cpu, client_cpu)


def own_latency(subscribers: int, store: str, servers: list[Server]) -> Measured:
    """Each subscriber follows a job of its own (spread over ``servers``);
    ``PROBES`` of the jobs finish one after another; the delay of each until
    its subscriber has the event, in seconds."""
    ids = [f"own-{i}" for i in range(subscribers)]
    change = Changes(store, servers)
    for job_id in ids:
        change("running", job_id)
    urls = [url for _, url in servers]
    targets = [(urls[i % len(urls)], job_id) for i, job_id in enumerate(ids)]
    started = _start_followers(targets, each=True)
    # _start_followers deals the targets out in turn.
    owner = {job_id: started[i % len(started)][1] for i, job_id in enumerate(ids)}
    delays: list[float] = []
    step = max(1, subscribers // PROBES)
    for job_id in ids[::step][:PROBES]:
        changed = change("done", job_id)
        conn = owner[job_id]
        if not conn.poll(30):
            raise RuntimeError(f"{job_id} did not arrive")
        kind, (arrived_id, arrived) = conn.recv()
        assert (kind, arrived_id) == ("arrived", job_id)
        delays.append(arrived - changed)
        time.sleep(0.05)
    for process, _ in started:
        process.terminate()
        process.join(10)
    change.close()
    return Measured(delays, None, None)


def percentiles(delays: list[float]) -> tuple[float, float]:
    ordered = sorted(delays)
    p99 = ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]
    return statistics.median(ordered), p99


def latencies(
    clients: int,
    codes: dict[str, str | None],
    follow: list[str],
    stores: list[str],
    rounds: int,
) -> list[dict[str, object]]:
    """Each measure ``rounds`` times: the median of the rounds' p50 and p99,
    and the range of their p99 (a garbage collection or the machine's
    other load can land inside one broadcast)."""
    rows = []
    setups: list[tuple[str, str, int]] = [
        ("memory", "in-process", 1),
        ("sqlite", "one server", 1),
    ]
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
            if kind not in stores:
                continue
            for pattern, measure in measures.items():
                if pattern.split()[0] not in follow:
                    continue
                for subscribers in (1, 100, clients):
                    if pattern == "own jobs" and subscribers == 1:
                        continue  # the same as "one job"
                    # Rounds alternate the codes, so a drift of the machine's
                    # load falls on both alike.
                    measured: dict[str, list[Measured]] = {n: [] for n in codes}
                    for _ in range(rounds):
                        for name, code in codes.items():
                            measured[name].append(
                                _measure_once(
                                    measure, kind, port, subscribers, instances, code
                                )
                            )
                    for name, runs in measured.items():
                        p50s = [percentiles(m.delays)[0] for m in runs]
                        p99s = [percentiles(m.delays)[1] for m in runs]
                        rows.append(
                            {
                                "store": kind,
                                "where": where,
                                "follow": pattern,
                                "subscribers": subscribers,
                                "code": name,
                                "p50 ms": _ms(statistics.median(p50s)),
                                "p99 ms": _ms(statistics.median(p99s)),
                                "p99 range ms": f"{_ms(min(p99s))}-{_ms(max(p99s))}",
                                "server cpu s": _rounded(
                                    _median_of(m.server_cpu for m in runs)
                                ),
                                "client cpu s": _rounded(
                                    _median_of(m.client_cpu for m in runs)
                                ),
                            }
                        )
                        print(rows[-1], file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.terminate()
    return rows


def _measure_once(
    measure: Callable[[int, str, list[Server]], Measured],
    kind: str,
    port: int,
    subscribers: int,
    instances: int,
    code: str | None,
) -> Measured:
    """One measure on fresh servers of a fresh store of ``kind``."""
    directory = tempfile.mkdtemp(prefix="bench-latency-")
    store = {
        "memory": "memory://",
        "sqlite": f"sqlite://{directory}/jobs.db",
        "redis": f"redis://127.0.0.1:{port}/0?prefix={os.path.basename(directory)}:",
    }[kind]
    if kind != "memory":  # its server makes its probe
        recorder = Recorder(store)
        recorder.running("probe")
        recorder.close()
    servers = [serve(store, directory, code) for _ in range(instances)]
    try:
        return measure(subscribers, store, servers)
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _median_of(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _rounded(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


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
        "--follow", default="one,own", help="latency patterns: one, own or both"
    )
    parser.add_argument(
        "--stores",
        default="memory,sqlite,redis",
        help="latency stores: memory (in-process), sqlite, redis",
    )
    parser.add_argument(
        "--baseline", help="a directory of the packages of the code to compare with"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="latency measures per row (medians)"
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
        rows = latencies(
            args.clients,
            codes,
            args.follow.split(","),
            args.stores.split(","),
            args.rounds,
        )
        print(table(rows))


if __name__ == "__main__":
    main()
