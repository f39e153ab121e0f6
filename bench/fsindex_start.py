"""How long the file index takes to start, and the memory it holds per job.

    python bench/fsindex_start.py [--jobs 100000 1000000] [--dir DIR] [--repeat 3]
    python bench/fsindex_start.py --warm-only [--jobs ...] [--repeat 3]
    python bench/fsindex_start.py --memory [--top 15] [--jobs ...]

For each N: fills ``DIR/<N>/jobs`` with N Toolkit-shaped job files (kept for
the next run; written with ``os.open``/``os.write``), then in one process:

- full build: no snapshot, every file read (the start before snapshots);
- snapshot write: the ``close`` after it;
- warm start: the next start, with the snapshot and the page cache warm;
- 1% changed: 1% of the files rewritten in place, then a start;
- memory: ``tracemalloc`` around a start from the snapshot, per job.

Prints a table; times are medians of ``--repeat`` runs (the full build runs
once at 1,000,000).

``--warm-only`` skips the full build (minutes at 1,000,000) when a snapshot
is there (it builds one first when not), and splits a warm start by phase,
wall and CPU time (``time.process_time``) side by side: listing ``jobs/``
with an ``lstat`` each (``jobfiles.scan``, as a scan without the index
does), loading the snapshot, numbering its rows by job id, the start's own
listing (``jobtable.match_listing``: listing, ``lstat`` and matching each
file with the snapshot), the whole start (those, then placing the jobs in
order), and the first listings answered after it. ``--memory`` prints the
index's bytes per job and, with ``--top``, the lines that hold most of it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobstatus_backends import fssnapshot, jobfiles, jobtable
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.fssnapshot import SNAPSHOT_PATH
from jobstatus_core import jsontext

STATUSES = ("done", "running", "failed", "queued")


def record_bytes(job_id: str, i: int) -> bytes:
    return json.dumps(
        {
            "job_id": job_id,
            "job_status": STATUSES[i % len(STATUSES)],
            "job_progress": 100,
            "response": f"https://cdn.example/{job_id}.mp4",
            "message": "success",
        }
    ).encode()


def fill(root: Path, n: int) -> list[str]:
    """N job files, "last written" spread over 30 days (1% in 10 minutes)."""
    jobs = root / "jobs"
    done = root / "filled"
    if done.exists():
        return sorted(name[: -len(".json")] for name in os.listdir(jobs))
    rnd = random.Random(n)
    ids = [f"job-{i:08d}-{rnd.getrandbits(64):016x}" for i in range(n)]
    jobs.mkdir(parents=True, exist_ok=True)
    now = time.time()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    for i, job_id in enumerate(ids):
        age = 600 * rnd.random() if i % 100 == 0 else 30 * 86400 * rnd.random()
        fd = os.open(jobs / f"{job_id}.json", flags, 0o644)
        try:
            os.write(fd, record_bytes(job_id, i))
            os.utime(fd, (now - age, now - age))
        finally:
            os.close(fd)
    done.touch()
    return ids


def started(root: Path) -> tuple[FileStore, float]:
    """A store started at ``root``, and the seconds its start took."""
    gc.collect()
    begin = time.perf_counter()
    store = start(root)
    return store, time.perf_counter() - begin


def timed(action: Callable[[], object]) -> float:
    gc.collect()
    begin = time.perf_counter()
    action()
    return time.perf_counter() - begin


def start(root: Path) -> FileStore:
    return FileStore(root, reconcile_interval=3600)


def measure(root: Path, ids: list[str], repeat: int) -> dict[str, float]:
    snapshot = root / SNAPSHOT_PATH
    result: dict[str, float] = {}
    builds, writes = [], []
    for _ in range(1 if len(ids) >= 1_000_000 else repeat):
        snapshot.unlink(missing_ok=True)
        store, seconds = started(root)
        builds.append(seconds)
        writes.append(timed(store.close))
    result["build"] = statistics.median(builds)
    result["write"] = statistics.median(writes)
    result["snapshot_bytes"] = snapshot.stat().st_size / len(ids)
    warm = []
    for _ in range(repeat):
        store, seconds = started(root)
        warm.append(seconds)
        assert store.index is not None and len(store.index) == len(ids)
        store.close()
    result["warm"] = statistics.median(warm)
    changed = []
    rnd = random.Random(1)
    for _ in range(repeat):
        for i in rnd.sample(range(len(ids)), len(ids) // 100):
            path = root / "jobs" / f"{ids[i]}.json"
            path.write_bytes(record_bytes(ids[i], i + 1))
        store, seconds = started(root)
        changed.append(seconds)
        store.close()  # writes the snapshot again
    result["changed"] = statistics.median(changed)
    result["memory"] = memory_per_job(root, len(ids))
    return result


def memory_per_job(root: Path, n: int, top: int = 0) -> float:
    """Bytes the index holds per job, started from the snapshot; with
    ``top``, prints the lines that allocated most of them."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot() if top else None
    held = tracemalloc.get_traced_memory()[0]
    store = start(root)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    if before is not None:
        stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
        for stat in stats[:top]:
            frame = stat.traceback[0]
            print(
                f"  {stat.size_diff / n:7.1f} B/job"
                f"  {frame.filename.split('/')[-1]}:{frame.lineno}"
            )
    tracemalloc.stop()
    store.close()
    return (after - held) / n


def clocked(action: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``action``."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def listings(
    store: FileStore, n: int, note: Callable[[str, Callable[[], object]], None]
) -> None:
    """The first listings after a start, then the store closed."""
    assert store.index is not None and len(store.index) == n
    cutoff = time.time() - 600
    note("first listing, 600 s", lambda: listing_text(store, cutoff))
    note("first listing, all", lambda: listing_text(store, 0))
    store.close()


def started_by_phase(
    root: Path, note: Callable[[str, Callable[[], object]], None]
) -> FileStore:
    stores: list[FileStore] = []
    note("whole start", lambda: stores.append(start(root)))
    return stores[0]


def listing_text(store: FileStore, cutoff: float) -> str:
    return jsontext.join_members(store.window(cutoff).members)


def warm_phases(
    root: Path, ids: list[str], repeat: int
) -> dict[str, tuple[float, float]]:
    """A warm start split by phase, then starts with 1% of the files
    rewritten and the snapshot writes after them: medians of (wall, CPU)
    seconds."""
    n = len(ids)
    snapshot = root / SNAPSHOT_PATH
    jobs_dir = str(root / "jobs")
    identity = fssnapshot.identity_of(jobs_dir)
    if fssnapshot.load(str(snapshot), identity) is None:  # none, or unusable
        print(f"building the {n:,}-file snapshot once", file=sys.stderr)
        store = start(root)
        store.close()
    runs: dict[str, list[tuple[float, float]]] = {}

    def note(phase: str, action: Callable[[], object]) -> None:
        runs.setdefault(phase, []).append(clocked(action))

    known = fssnapshot.load(str(snapshot), identity)
    assert known is not None
    columns = known.columns
    row_of: list[dict[str, int]] = []

    def match() -> None:
        matched = jobtable.match_listing(
            jobs_dir, columns, row_of.pop(), known.trusted_before_ns
        )
        assert matched is not None

    for _ in range(repeat):
        note("listing and lstat", lambda: sum(1 for _ in jobfiles.scan(jobs_dir)))
        note("snapshot load", lambda: fssnapshot.load(str(snapshot), identity))
        note(
            "job id → row dict",
            lambda: row_of.append(dict(zip(columns.job_ids, range(n), strict=True))),
        )
        note("listing, lstat and matching", match)
        listings(started_by_phase(root, note), n, note)
    rnd = random.Random(2)
    for _ in range(repeat):
        for i in rnd.sample(range(n), n // 100):
            path = root / "jobs" / f"{ids[i]}.json"
            path.write_bytes(record_bytes(ids[i], i + 1))
        store = started_by_phase(root, lambda phase, action: note("1% changed", action))
        note("snapshot write", store.close)
    return {
        phase: (
            statistics.median(wall for wall, _ in times),
            statistics.median(cpu for _, cpu in times),
        )
        for phase, times in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dir", default="/tmp/jobstatus-fsindex-bench")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--memory", action="store_true", help="only the memory, of filled stores"
    )
    parser.add_argument(
        "--top", type=int, default=0, help="with --memory: the lines holding most"
    )
    parser.add_argument(
        "--warm-only",
        action="store_true",
        help="only a warm start, by phase (a snapshot is built once if missing)",
    )
    args = parser.parse_args()
    if args.memory:
        for n in args.jobs:
            print(f"{n:,} jobs:")
            per_job = memory_per_job(Path(args.dir) / str(n), n, args.top)
            print(f"{n:,} jobs: {per_job:.0f} B/job", flush=True)
        return
    if args.warm_only:
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("| jobs | phase | wall | CPU |")
        print("|---:|---|---:|---:|")
        for n in args.jobs:
            root = Path(args.dir) / str(n)
            ids = fill(root, n)
            for phase, (wall, cpu) in warm_phases(root, ids, args.repeat).items():
                print(f"| {n:,} | {phase} | {wall:.2f} s | {cpu:.2f} s |", flush=True)
            size = (root / SNAPSHOT_PATH).stat().st_size
            print(f"snapshot: {size / n:.0f} B/job", flush=True)
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    print(
        "| jobs | full build | snapshot write | warm start | 1% changed"
        " | full / warm | snapshot | index memory |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.jobs:
        root = Path(args.dir) / str(n)
        ids = fill(root, n)
        r = measure(root, ids, args.repeat)
        print(
            f"| {n:,} | {r['build']:.2f} s | {r['write']:.2f} s | {r['warm']:.2f} s"
            f" | {r['changed']:.2f} s | {r['build'] / r['warm']:.1f}x"
            f" | {r['snapshot_bytes']:.0f} B/job | {r['memory']:.0f} B/job |",
            flush=True,
        )


if __name__ == "__main__":
    main()
