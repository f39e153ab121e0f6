"""The app's own cost per request, without a server: the ASGI app driven in
process, as a server's event loop drives it, and the garbage collector's part.

Run by hand:

    python bench/http/inprocess.py [--stores memory,sqlite,file,redis]
        [--jobs 10000] [--batches 1500] [--concurrency 16] [--settle]

Each batch sends ``--concurrency`` requests at once (``asyncio.gather`` on
uvloop), as a turn of a loaded server's loop hands the app a request from
each connection; every request asks about the same job, as clients polling
it do. Printed per endpoint: CPU µs per request (median of 3 rounds), and the
collector's passes per 1,000 requests by generation with the CPU share they
took of the round's time (``gc.callbacks``). ``--settle``: the collector set
as ``jobstatus serve`` sets it once the app is built (``settle_heap``:
frozen heap, larger young generation); ``--freeze``: the heap frozen alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from apps import KEY, open_store  # noqa: E402
from stores import build_files, build_sqlite, plan_jobs, start_redis, timed_migrate  # noqa: E402

from jobstatus_adapters import make_service  # noqa: E402
from jobstatus_adapters.serverstack import settle_heap  # noqa: E402
from jobstatus_adapters.starlette import create_app  # noqa: E402


class Collections:
    """The collector's passes by generation and the time they took."""

    def __init__(self) -> None:
        self.passes: Counter[int] = Counter()
        self.seconds = 0.0
        self._began = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.passes[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._began

    def reset(self) -> None:
        self.passes.clear()
        self.seconds = 0.0


def scope_of(method: str, path: str, body: bytes, query: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"x-api-key", KEY.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


async def drive(
    app: Any,
    request: tuple[str, str, bytes, bytes],
    args: argparse.Namespace,
    collections: Collections,
) -> tuple[float, Counter[int], float]:
    """CPU µs per request (median of 3 rounds), passes per 1,000 requests of
    the last round, and the share of its time they took."""
    method, path, body, query = request
    scope = scope_of(method, path, body, query)
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return message

    async def send(sent: dict[str, Any]) -> None:
        if sent["type"] == "http.response.start":
            statuses.add(sent["status"])

    async def batch() -> None:
        await asyncio.gather(
            *(app(scope, receive, send) for _ in range(args.concurrency))
        )

    for _ in range(50):
        await batch()
    rounds = []
    wall = 0.0
    for _ in range(3):
        collections.reset()
        began, began_wall = time.process_time(), time.perf_counter()
        for _ in range(args.batches):
            await batch()
        rounds.append(time.process_time() - began)
        wall = time.perf_counter() - began_wall
    if statuses != {200}:
        sys.exit(f"{method} {path}: answered {sorted(statuses)}")
    requests = args.batches * args.concurrency
    per_thousand = Counter(
        {gen: round(n * 1000 / requests, 2) for gen, n in collections.passes.items()}
    )
    return (
        statistics.median(rounds) / requests * 1e6,
        per_thousand,
        collections.seconds / wall,
    )


async def lifespan(app: Any) -> tuple[asyncio.Queue[dict[str, str]], Any]:
    """Start the app's lifespan: (the queue a shutdown message ends it by,
    its task)."""
    incoming: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    task = asyncio.ensure_future(app(scope, incoming.get, started.put))
    await started.get()
    return incoming, task


async def run(args: argparse.Namespace, tmp: Path) -> None:
    jobs = plan_jobs(args.jobs, time.time())
    known = jobs[len(jobs) // 2][0]
    job_body = f'{{"job_id": "{known}"}}'.encode()
    requests = {
        "job/status": ("POST", "/v1/toolkit/job/status", job_body, b""),
        "GET job": ("GET", f"/v1/job/{known}", b"", b""),
        "jobs/status": (
            "POST",
            "/v1/toolkit/jobs/status",
            b'{"since_seconds": 600}',
            b"",
        ),
        "GET jobs": ("GET", "/v1/jobs", b"", b"limit=100"),
    }
    collections = Collections()
    thresholds = gc.get_threshold()
    collector = "as Python sets it"
    if args.settle:
        collector = "as serve sets it"
    elif args.freeze:
        collector = "the heap frozen"
    print(
        f"{args.jobs:,} jobs; {args.concurrency} requests at once, {args.batches}"
        f" batches, median of 3 rounds; the collector {collector}"
    )
    print()
    print(
        "| store · endpoint | CPU/req | gc passes per 1,000 req (gen 0/1/2)"
        " | gc share of the time |"
    )
    print("|---|---:|---:|---:|")
    for name in args.stores.split(","):
        redis = None
        if name == "memory":
            url = "memory://"
        elif name == "sqlite":
            build_sqlite(tmp / "jobs.db", jobs)
            url = f"sqlite://{tmp}/jobs.db"
        else:
            if not (tmp / "storage").exists():
                build_files(tmp / "storage", jobs)
            url = f"file://{tmp}/storage"
            if name == "redis":
                started = start_redis(str(tmp))
                if started is None:
                    sys.exit("redis-server not found")
                redis, url = started
                timed_migrate(f"file://{tmp}/storage?index=off", url)
        store = open_store(url, args.jobs)
        app = create_app(make_service(store, api_keys=[KEY]))
        shutdown, ended = await lifespan(app)
        await asyncio.sleep(1)  # the file index's first scan, Redis's layout check
        if args.settle:
            settle_heap()
        elif args.freeze:
            gc.freeze()
        try:
            for label, request in requests.items():
                cpu, passes, share = await drive(app, request, args, collections)
                print(
                    f"| {name} · {label} | {cpu:.1f} µs"
                    f" | {passes[0]:g} / {passes[1]:g} / {passes[2]:g} | {share:.0%} |",
                    flush=True,
                )
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            await shutdown.put({"type": "lifespan.shutdown"})
            await ended
            store.close()
            if redis is not None:
                redis.terminate()
                redis.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="memory,sqlite,file,redis")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--settle", action="store_true")
    parser.add_argument("--freeze", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobstatus-inprocess-") as tmp:
        uvloop.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
