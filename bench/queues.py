"""Job-queue adapters: microseconds each adds to a no-op task.

Run by hand (not a test):
    python bench/queues.py [--tasks 300] [--queues celery,rq,dramatiq,huey]

Each queue runs the same no-op task N times without the adapter and with it
installed on an SQLite file and on a Redis store, in this process:

- Celery: ``apply_async`` on the in-memory broker (``queued``) and ``apply``
  with the same id (``running``, ``done``): Celery's own publish and trace
  code, without a broker round trip or a pool.
- RQ: ``enqueue`` on a real redis-server (``queued``), then a burst of
  ``rq.Worker`` or ``RecordingWorker`` (``running``, ``done``), forking a
  work horse per job as ``rq worker`` does.
- Dramatiq: ``send`` on the in-memory ``StubBroker`` (``queued``), then a
  ``dramatiq.Worker`` with one thread runs them (``running``, ``done``):
  Dramatiq's own middleware chain, without a broker round trip.
- Huey: a ``MemoryHuey`` in immediate mode: enqueueing runs the task at once
  through Huey's own execute path (``queued``, ``running``, ``done``).

The difference of the means is the adapter's cost: three recorder changes
per task, plus, under RQ, opening the store in each work horse. Machines are
shared and noisy: compare numbers of one run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from protocol import start_redis


def noop() -> None:
    return None


def per_task_us(run: Callable[[], None], tasks: int) -> float:
    start = time.perf_counter()
    for _ in range(tasks):
        run()
    return (time.perf_counter() - start) / tasks * 1e6


def bench_celery(tasks: int, stores: dict[str, str]) -> dict[str, float]:
    from celery import Celery

    from jobstatus_adapters.celery import install

    app = Celery("bench", broker="memory://")
    task = app.task(noop, name="bench.noop")

    def one() -> None:
        job_id = uuid.uuid4().hex
        task.apply_async(task_id=job_id)
        task.apply(task_id=job_id)

    row = {"none": per_task_us(one, tasks)}
    for name, url in stores.items():
        recording = install(app, url)
        one()  # opens the store
        row[name] = per_task_us(one, tasks)
        recording.uninstall()
    app.close()
    return row


def bench_rq(tasks: int, stores: dict[str, str], redis_url: str) -> dict[str, float]:
    from redis import Redis
    from rq import Queue, Worker

    from jobstatus_adapters.rq import RecordingWorker, install

    connection = Redis.from_url(redis_url)

    def run(queue: Queue, worker: Worker) -> float:
        start = time.perf_counter()
        for _ in range(tasks):
            queue.enqueue("queues.noop")  # by name: not from __main__
        worker.work(burst=True, logging_level="WARNING")
        return (time.perf_counter() - start) / tasks * 1e6

    plain = Queue(f"bench-{uuid.uuid4().hex[:6]}", connection=connection)
    row = {"none": run(plain, Worker([plain], connection=connection))}
    for name, url in stores.items():
        queue = install(
            Queue(f"bench-{uuid.uuid4().hex[:6]}", connection=connection), url
        )
        worker = RecordingWorker([queue], connection=connection, store=url)
        row[name] = run(queue, worker)
    connection.close()
    return row


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
    parser.add_argument("--queues", default="celery,rq,dramatiq,huey")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found: the RQ broker and the Redis store need it")
    directory = Path(tempfile.mkdtemp(prefix="bench-queues-"))
    server, redis_url = start_redis(directory)
    try:
        stores = {
            "sqlite": f"sqlite://{directory / 'jobs.db'}",
            "redis": f"{redis_url}?prefix=bench-{uuid.uuid4().hex[:6]}:",
        }
        rows = {}
        if "celery" in args.queues:
            rows["celery"] = bench_celery(args.tasks, stores)
        if "rq" in args.queues:
            rows["rq"] = bench_rq(args.tasks, stores, redis_url)
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
