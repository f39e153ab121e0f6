"""Retention under concurrency (SPEC §14): writers rewrite their jobs at
random times while two purgers expire stale jobs of the same store at once.

Writers and purgers are processes where the store can be shared between
processes, threads for ``memory://``. Time is the caller's (``at=``,
``now``): nothing sleeps. Each seed runs in an epoch of its own, after the
previous seed's, with jobs of its own.

Afterwards every job is either alive with its last write and no tombstone,
or gone with a tombstone of its last write, left by a purge whose ``now``
made that write stale: a job rewritten after it went stale is never gone,
and nothing else is removed. Then four purgers at once, with nothing
writing, expire each stale job exactly once.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import pytest

from jobstatus_backends import store_from_url
from jobstatus_core import Expiring, Store, jsontext
from jobstatus_core.retention import parse_policy, purge
from jobstatus_core.rows import Query, Row, Stale, Tombstone
from jobstatus_core.wrapping import StoreWrapper

from .helpers import expiring, store_url_for

POLICY = parse_policy("done=10s,failed=30s,*=60s")
#: Long enough that no purge of these tests forgets a tombstone.
KEEP_TOMBSTONES = 1e12
#: A status that is not a string falls under ``*`` like any other.
STATUSES: list[Any] = ["queued", "running", "done", "done", "failed", {"stage": 2}]
WRITERS = 2
JOBS_PER_WRITER = 5
WRITES_PER_WRITER = 60
PURGES_PER_PURGER = 30
#: Time each seed's writes and purges spread over (seconds of the caller's
#: clock); the final purge is later than every write by more than the
#: longest age of the policy.
SPAN = 200.0
FINAL = 1000.0
EPOCH = 1_000_000_000.0
#: Seeded examples per store: processes cost a start each, threads do not.
SEEDS_PROCESSES = 8
SEEDS_THREADS = 25
#: Far above the time every part of a round takes to open its store.
BARRIER_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Write:
    job_id: str
    status: Any
    at: float
    #: Read the job and swap on its version instead of a blind put.
    swap: bool
    tag: int

    def record(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "job_status": self.status, "response": self.tag}

    @property
    def status_text(self) -> str:
        return jsontext.encode(self.status)

    @property
    def status_name(self) -> str:
        """As ``Purged.expired`` names it."""
        return self.status if isinstance(self.status, str) else self.status_text


@dataclass(frozen=True, slots=True)
class Plan:
    """One seed: what each writer writes and when each purger purges."""

    writes: list[list[Write]]
    purges: list[list[tuple[float, int]]]
    final: float

    def last(self) -> dict[str, Write]:
        """Each job's last write (each job has one writer)."""
        return {w.job_id: w for script in self.writes for w in script}


def plan(seed: int) -> Plan:
    """Writers and purgers move through the same span of time, so a purge
    finds jobs last written both before and after its ``now`` less the age
    of their status; one write in ten is out of order, much older."""
    rng = random.Random(seed)
    epoch = EPOCH + seed * 10 * FINAL
    writes: list[list[Write]] = []
    for writer in range(WRITERS):
        jobs = [f"s{seed}-w{writer}-j{i}" for i in range(JOBS_PER_WRITER)]
        step = SPAN / WRITES_PER_WRITER
        writes.append(
            [
                Write(
                    rng.choice(jobs),
                    rng.choice(STATUSES),
                    epoch + round(i * step) - (50 if rng.random() < 0.1 else 0),
                    rng.random() < 0.5,
                    writer * 1000 + i,
                )
                for i in range(WRITES_PER_WRITER)
            ]
        )
    step = SPAN / PURGES_PER_PURGER
    purges = [
        [
            (epoch + round(i * step) + rng.randrange(10), rng.choice([1, 3, 1000]))
            for i in range(PURGES_PER_PURGER)
        ]
        for _ in range(2)
    ]
    return Plan(writes, purges, epoch + FINAL)


def write(store: Store, script: list[Write]) -> None:
    for w in script:
        if not w.swap:
            store.put(w.record(), at=w.at)
            continue
        # Read, then write only over what was read: a purger may expire the
        # job in between (the swap then fails and is tried again).
        while True:
            row = store.read(w.job_id)
            expected = None if row is None else row.version
            if store.swap(w.record(), expected=expected, at=w.at):
                break


def purge_at(store: Store, nows: list[tuple[float, int]]) -> dict[str, int]:
    expired: Counter[str] = Counter()
    for now, batch in nows:
        purged = purge(store, POLICY, now=now, tombstones=KEEP_TOMBSTONES, batch=batch)
        expired.update(purged.expired)
    return dict(expired)


Task = tuple[str, str, Any]


def run(
    task: Task,
    store: Store | None = None,
    ready: Callable[[], Any] | None = None,
    failed: Callable[[], Any] | None = None,
) -> dict[str, int]:
    """One writer's or purger's part, on ``store`` or a store it opens;
    ``ready`` is called once the store is open, before the first call, and
    ``failed`` instead when it cannot be opened: the parts waiting for this
    one at the barrier are let go, and the round fails rather than hangs."""
    kind, url, script = task
    try:
        opened = store if store is not None else store_from_url(url)
    except BaseException:
        if failed is not None:
            failed()
        raise
    try:
        if ready is not None:
            ready()
        if kind == "write":
            write(opened, script)
            return {}
        return purge_at(opened, script)
    finally:
        if store is None:
            opened.close()


#: A pool process's barrier shared with the other pool processes (set by
#: ``_joined``): the parts of a round start together, each once its store
#: is open, or a part would be over before the last one began.
_together: Any = None


def _joined(barrier: Any) -> None:
    global _together
    _together = barrier


def _run(task: Task) -> dict[str, int]:
    # A round of as many parts as the pool has processes: each process takes
    # one part (a process waiting at the barrier takes no other). Bounded: a
    # part lost some other way fails the round (BrokenBarrierError).
    return run(
        task,
        ready=lambda: _together.wait(BARRIER_SECONDS),
        failed=_together.abort,
    )


Runner = Callable[[list[Task]], list[dict[str, int]]]
#: The store to check afterwards, closed after the check if it was opened for it.
Reader = Callable[[], AbstractContextManager[Store]]


class GivingWay(StoreWrapper):
    """An expiring store whose ``stale`` gives the other threads the GIL before
    it returns: the window between a purger's ``stale`` and its ``expire``
    that a writer in another process has anyway. Without it, a thread
    holding the GIL goes straight from one to the other."""

    inner: Any

    def stale(self, query: Stale) -> list[Row]:
        rows: list[Row] = self.inner.stale(query)
        time.sleep(0)
        return rows

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        left: list[Tombstone] = self.inner.expire(rows, at=at)
        return left

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        found: dict[str, Tombstone] = self.inner.tombstones(job_ids)
        return found

    def buried(self, query: Query) -> list[Tombstone]:
        found: list[Tombstone] = self.inner.buried(query)
        return found

    def forget(self, *, before: float, limit: int) -> int:
        return int(self.inner.forget(before=before, limit=limit))


def in_threads(store: Store) -> Runner:
    def start(tasks: list[Task]) -> list[dict[str, int]]:
        results: list[dict[str, int]] = [{} for _ in tasks]
        errors: list[BaseException] = []
        # All start together: a thread started first would be done before
        # the last one starts.
        ready = threading.Barrier(len(tasks))

        def one(i: int) -> None:
            try:
                results[i] = run(tasks[i], GivingWay(store), ready.wait)
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(tasks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    return start


def in_processes(pool: Pool) -> Runner:
    def start(tasks: list[Task]) -> list[dict[str, int]]:
        return pool.map(_run, tasks, chunksize=1)

    return start


def was_stale(w: Write, now: float) -> bool:
    """Whether the policy expires ``w`` at ``now`` (if it is still the last)."""
    age = POLICY.ages.get(w.status_name, POLICY.other)
    return age is not None and w.at < now - age


def listed(store: Store, prefix: str) -> set[str]:
    found: set[str] = set()
    after = 0
    while True:
        rows = store.page(Query(after=after, limit=100))
        found.update(r.job_id for r in rows if r.job_id.startswith(prefix))
        if len(rows) < 100:
            return found
        after = rows[-1].position


def check(
    store: Store, seed: int, last: dict[str, Write], purge_nows: set[float]
) -> dict[str, Tombstone]:
    """Every job alive with its last write, or a tombstone of it; returns the
    tombstones."""
    assert isinstance(store, Expiring)
    rows = store.read_many(list(last))
    tombs = store.tombstones(list(last))
    for job_id, w in last.items():
        where = f"seed {seed}, {job_id}, last write {w}"
        row = rows.get(job_id)
        if row is not None:
            assert row.record == w.record(), where
            assert row.updated_at == pytest.approx(w.at, abs=1e-3), where
            assert job_id not in tombs, f"{where}: and {tombs[job_id]}"
            continue
        assert job_id in tombs, f"{where}: gone without a tombstone"
        tomb = tombs[job_id]
        assert tomb.status == w.status_text, f"{where}: another write {tomb}"
        assert tomb.expired_at in purge_nows, f"{where}: {tomb}"
        assert was_stale(w, tomb.expired_at), f"{where}: expired while fresh {tomb}"
    assert listed(store, f"s{seed}-") == set(rows), f"seed {seed}"
    return tombs


def run_seed(url: str, seed: int, start: Runner, reader: Reader) -> None:
    p = plan(seed)
    last = p.last()
    tasks: list[Task] = [("write", url, script) for script in p.writes]
    tasks += [("purge", url, nows) for nows in p.purges]
    purged = start(tasks)[WRITERS:]
    purge_nows = {now for nows in p.purges for now, _ in nows}

    with reader() as store:
        before = check(store, seed, last, purge_nows)
    alive = {j for j in last if j not in before}
    due = {j for j in alive if was_stale(last[j], p.final)}
    # A job expired and written again counts in a purge but has no tombstone.
    assert sum(sum(e.values()) for e in purged) >= len(before), f"seed {seed}"

    # Purgers at once and nothing writing: each stale job expires once.
    final = [("purge", url, [(p.final, 1000)]) for _ in range(WRITERS + 2)]
    counted = start(final)
    with reader() as store:
        after = check(store, seed, last, purge_nows | {p.final})
        fresh = {j: t for j, t in after.items() if j not in before}
        assert sum(sum(e.values()) for e in counted) == len(fresh), f"seed {seed}"
        assert set(fresh) == due, f"seed {seed}: expired {set(fresh)}, due {due}"
        by_status: Counter[str] = Counter()
        for c in counted:
            by_status.update(c)
        assert by_status == Counter(last[j].status_name for j in due), f"seed {seed}"


@pytest.fixture
def pool() -> Iterator[Pool]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS + 2)
    with context.Pool(WRITERS + 2, _joined, (barrier,)) as started:
        yield started


def test_writers_and_two_purgers_in_processes(
    shared_store_url: str, pool: Pool
) -> None:
    url = expiring(shared_store_url)
    for seed in range(SEEDS_PROCESSES):
        # A store opened afterwards reads what the processes left (the
        # indexed file store scans at open).
        run_seed(url, seed, in_processes(pool), lambda: closing(store_from_url(url)))


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("memory", marks=pytest.mark.memory),
        pytest.param("dbm", marks=pytest.mark.plugin),
    ],
)
def test_writers_and_two_purgers_in_threads(kind: str, tmp_path: Path) -> None:
    url = store_url_for(kind, tmp_path)
    # Threads switch every few microseconds instead of every 5 ms, so writes
    # and purges interleave inside one seed's few calls.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with closing(store_from_url(url)) as store:
            for seed in range(SEEDS_THREADS):
                run_seed(url, seed, in_threads(store), lambda: nullcontext(store))
    finally:
        sys.setswitchinterval(interval)
