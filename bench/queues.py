"""Job-queue adapters: microseconds each adds to a no-op task.

Run by hand (not a test):
    python bench/queues.py [--tasks 300] [--queues celery,rq,dramatiq,huey]

Each queue runs the same no-op task N times without the adapter and with it
installed on an SQLite file and on a Redis store, in this process:

- Celery: ``apply_async`` on the in-memory broker (``queued``) and ``apply``
  with the same id (``running``, ``done``): Celery's own publish and trace
  code, without a broker round trip or a pool.
- RQ: ``enqueue`` on a real redis-server (``queued``), then a burst of
  ``rq.Worker`` or ``RecordingWorker`` (``running``, ``done``, recorded by
  the worker around each work horse), forking a horse per job as ``rq
  worker`` does; five rounds, the setups interleaved in each, medians (a
  fork's cost drifts with the machine's load), and CPU per job beside.
- Dramatiq: ``send`` on the in-memory ``StubBroker`` (``queued``), then a
  ``dramatiq.Worker`` with one thread runs them (``running``, ``done``):
  Dramatiq's own middleware chain, without a broker round trip.
- Huey: a ``MemoryHuey`` in immediate mode: enqueueing runs the task at once
  through Huey's own execute path (``queued``, ``running``, ``done``).

The difference is the adapter's cost: three recorder changes per task.
Machines are shared and noisy: compare numbers of one run.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
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


def bench_rq(
    tasks: int, stores: dict[str, str], redis_url: str, rounds: int = 5
) -> dict[str, float]:
    """Wall time per job, median of ``rounds`` interleaved rounds (a fork's
    cost drifts with the machine's load: each round runs every setup once,
    one right after another). Also prints CPU time per job (the worker and
    its work horses), which the drift touches less."""
    from redis import Redis
    from rq import Queue, Worker

    from jobstatus_adapters.rq import RecordingWorker, install

    connection = Redis.from_url(redis_url)
    per_round = max(1, tasks // rounds)

    def run(queue: Queue, worker: Worker) -> tuple[float, float]:
        before = cpu_seconds()
        start = time.perf_counter()
        for _ in range(per_round):
            queue.enqueue("queues.noop")  # by name: not from __main__
        worker.work(burst=True, logging_level="WARNING")
        wall = (time.perf_counter() - start) / per_round * 1e6
        return wall, (cpu_seconds() - before) / per_round * 1e6

    def setup(url: str | None) -> tuple[Queue, Worker]:
        queue = Queue(f"bench-{uuid.uuid4().hex[:6]}", connection=connection)
        if url is None:
            return queue, Worker([queue], connection=connection)
        worker = RecordingWorker([queue], connection=connection, store=url)
        return install(queue, url), worker

    setups = {"none": setup(None)} | {name: setup(url) for name, url in stores.items()}
    walls: dict[str, list[float]] = {name: [] for name in setups}
    cpus: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, (queue, worker) in setups.items():
            wall, cpu = run(queue, worker)
            walls[name].append(wall)
            cpus[name].append(cpu)
    connection.close()
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    print(
        "rq, CPU µs per job (worker and work horses, median of rounds): "
        + ", ".join(
            f"{name} {value:,.0f}"
            + ("" if name == "none" else f" (+{value - cpu['none']:,.0f})")
            for name, value in cpu.items()
        ),
        file=sys.stderr,
    )
    return {name: statistics.median(values) for name, values in walls.items()}


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
