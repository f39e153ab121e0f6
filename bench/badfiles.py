"""File index benchmark: what unparseable and oversized job files cost.

Run by hand (not a test):  python bench/badfiles.py [--good 10000] [--bad 200]

Builds a jobs directory of ``--good`` valid job files and ``--bad`` empty
``.json`` files (what an in-place writer leaves for a moment, or a crashed one
for good), plus, with ``--sparse-gb``, one sparse file that size. Then times,
in one run:

- the index's start (one scan, every file read once);
- the first listing after it;
- the process's peak memory (a file read whole shows there);
- one reconcile round with nothing changed (the directory compared with the
  index, what happens every 30 s while serving), and a listing made while
  that round runs.

Machines are shared and noisy: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from jobstatus_backends.filesystem import FileStore


def build(root: Path, good: int, bad: int, sparse_gb: float) -> None:
    jobs = root / "jobs"
    jobs.mkdir()
    now = time.time()
    for i in range(good):
        path = jobs / f"good-{i}.json"
        path.write_text(json.dumps({"job_id": f"good-{i}", "job_status": "done"}))
        os.utime(path, (now, now))
    for i in range(bad):
        (jobs / f"bad-{i}.json").touch()
    if sparse_gb:
        with (jobs / "sparse.json").open("wb") as file:
            file.truncate(int(sparse_gb * (1 << 30)))


def seconds(started: float) -> str:
    return f"{time.perf_counter() - started:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--good", type=int, default=10_000)
    parser.add_argument("--bad", type=int, default=200)
    parser.add_argument("--sparse-gb", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, args.good, args.bad, args.sparse_gb)
        print(f"{args.good} good files, {args.bad} empty, sparse {args.sparse_gb} GB")
        started = time.perf_counter()
        # A reconcile interval no run reaches: rounds are started by hand.
        store = FileStore(root, reconcile_interval=3600)
        print(f"index start:       {seconds(started)}")
        assert store.index is not None
        started = time.perf_counter()
        listed = len(store.changed_since(0))
        print(f"first listing:     {seconds(started)} ({listed} jobs)")
        # Nothing changed since the start: a round should read nothing.
        index = store.index

        def reconcile() -> None:
            started = time.perf_counter()
            index.reconcile()
            print(f"reconcile round:   {seconds(started)}")

        worker = threading.Thread(target=reconcile)
        worker.start()
        time.sleep(0.05)  # the round holds the index's lock now, if it lasts
        started = time.perf_counter()
        store.changed_since(0)
        meanwhile = seconds(started)
        worker.join()
        print(f"listing meanwhile: {meanwhile}")
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory:       {peak:.0f} MB")


if __name__ == "__main__":
    main()
