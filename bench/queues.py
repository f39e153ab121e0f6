"""Job-queue adapters: microseconds each adds to a no-op task.

Run by hand (not a test):  python bench/queues.py [--tasks 300] [--queues dramatiq,huey]

Each queue runs the same no-op task N times without the adapter and with it
installed on an SQLite file and on a Redis store, in this process:

- Dramatiq: ``send`` on the in-memory ``StubBroker`` (``queued``), then a
  ``dramatiq.Worker`` with one thread runs them (``running``, ``done``):
  Dramatiq's own middleware chain, without a broker round trip.
- Huey: a ``MemoryHuey`` in immediate mode: enqueueing runs the task at once
  through Huey's own execute path (``queued``, ``running``, ``done``).

The difference of the means is the adapter's cost: three recorder changes
per task. Machines are shared and noisy: compare numbers of one run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from protocol import start_redis


def bench_dramatiq(tasks: int, stores: dict[str, str]) -> dict[str, float]:
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    from jobstatus_adapters.dramatiq import install

    def run(url: str | None) -> float:
        broker = StubBroker()
        if url is not None:
            install(broker, url)
        actor = dramatiq.actor(lambda: None, actor_name="noop", broker=broker)
        worker = dramatiq.Worker(broker, worker_threads=1)
        worker.start()
        actor.send()  # opens the store
        broker.join(actor.queue_name)
        start = time.perf_counter()
        for _ in range(tasks):
            actor.send()
        broker.join(actor.queue_name)
        worker.join()
        took = (time.perf_counter() - start) / tasks * 1e6
        worker.stop()
        broker.close()
        return took

    return {"none": run(None), **{name: run(url) for name, url in stores.items()}}


def bench_huey(tasks: int, stores: dict[str, str]) -> dict[str, float]:
    from huey import MemoryHuey

    from jobstatus_adapters.huey import install

    def run(url: str | None) -> float:
        huey = MemoryHuey(f"bench-{uuid.uuid4().hex[:6]}", immediate=True)
        if url is not None:
            install(huey, url)
        task = huey.task()(lambda: None)
        task()  # opens the store
        start = time.perf_counter()
        for _ in range(tasks):
            task()
        return (time.perf_counter() - start) / tasks * 1e6

    return {"none": run(None), **{name: run(url) for name, url in stores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--queues", default="dramatiq,huey")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found: the Redis store needs it")
    directory = Path(tempfile.mkdtemp(prefix="bench-queues-"))
    server, redis_url = start_redis(directory)
    try:
        stores = {
            "sqlite": f"sqlite://{directory / 'jobs.db'}",
            "redis": f"{redis_url}?prefix=bench-{uuid.uuid4().hex[:6]}:",
        }
        rows = {}
        if "dramatiq" in args.queues:
            rows["dramatiq"] = bench_dramatiq(args.tasks, stores)
        if "huey" in args.queues:
            rows["huey"] = bench_huey(args.tasks, stores)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    print(f"\n{args.tasks} no-op tasks; µs per task (added by the adapter)\n")
    print("| queue | without | SQLite store | Redis store |")
    print("|---|---:|---:|---:|")
    for queue, row in rows.items():
        base = row["none"]
        cells = [f"{row[s]:,.0f} (+{row[s] - base:,.0f})" for s in stores]
        print(f"| {queue} | {base:,.0f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
