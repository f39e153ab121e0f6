"""The Toolkit's own app against ``jobstatus serve``, on copies of one store.

Run by hand (not a test; needs wrk, and Flask and gunicorn: the ``bench``
extra, ``pip install '.[bench,fast]'``; apt-get install wrk):

    python bench/toolkit_app/compare.py [--sizes 1000,10000,100000] [--seconds 5]

For each size, one Toolkit-shaped store of N job files (bench/stores.py's
plan: "last written" over 30 days, 1% in the last 10 minutes) is copied once
per server, so none sees another's writes:

- the Toolkit stand-in (app.py): Flask under gunicorn, 2 sync workers;
- ``jobstatus serve`` on the file store (its watchdog index), 1 worker;
- ``jobstatus serve --workers 2``, the same worker count as the Toolkit's.

wrk (one thread, 16 connections, 60 s timeout so slow answers count instead
of erroring) drives ``job/status`` on one known job and ``jobs/status`` with
the default window, each server in turn within every round; figures are
medians of --repeat rounds, ratios taken within each round.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "http"))

from run import JOB, JOBS, KEY, Load, median_of, wrk  # noqa: E402
from serving import start_server  # noqa: E402
from stores import build_files, plan_jobs  # noqa: E402

Started = tuple[subprocess.Popen[bytes], str]


def start_toolkit(storage: Path) -> Started:
    env = {**os.environ, "LOCAL_STORAGE_PATH": str(storage), "API_KEY": KEY}
    return start_server(
        lambda port: [
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--worker-class",
            "sync",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "app:app",
        ],
        cwd=str(HERE),
        env=env,
    )


def start_jobstatus(storage: Path, workers: int) -> Started:
    env = {**os.environ, "API_KEY": KEY}
    return start_server(
        lambda port: [
            "-m",
            "jobstatus_adapters.cli",
            "serve",
            "--store",
            f"file://{storage}",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=env,
    )


SERVERS = (
    "Toolkit (Flask, gunicorn 2 sync)",
    "jobstatus serve",
    "jobstatus serve --workers 2",
)


def gain(target: list[dict[str, float]], toolkit: list[dict[str, float]]) -> float:
    """Median within-round ratio; a round where the Toolkit answered nothing
    in time counts as infinitely faster."""
    return statistics.median(
        t["rps"] / k["rps"] if k["rps"] else math.inf
        for t, k in zip(target, toolkit, strict=True)
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate; kill what does not stop (gunicorn waits for its workers,
    which may be deep in a 100,000-file listing)."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    rows = []
    for size in (int(n) for n in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="jobstatus-toolkit-") as tmp:
            print(f"{size:,} files ...", file=sys.stderr, flush=True)
            jobs = plan_jobs(size, time.time())
            known = jobs[len(jobs) // 2][0]
            build_files(Path(tmp) / "store", jobs)
            copies = [Path(tmp) / f"copy-{i}" for i in range(len(SERVERS))]
            for copy in copies:
                shutil.copytree(Path(tmp) / "store", copy)
            servers = [
                start_toolkit(copies[0]),
                start_jobstatus(copies[1], 1),
                start_jobstatus(copies[2], 2),
            ]
            try:
                # jobs/status first: every request the Toolkit answers adds a
                # recent job file, and job/status answers hundreds a second.
                for label, path, body in (
                    ("jobs/status", JOBS, '{"since_seconds": 600}'),
                    ("job/status", JOB, f'{{"job_id": "{known}"}}'),
                ):
                    load = Load(
                        "POST", body, args.seconds, args.connections, timeout=60
                    )
                    rounds = [
                        [
                            wrk(base + path, process.pid, load, tmp)
                            for process, base in servers
                        ]
                        for _ in range(args.repeat)
                    ]
                    runs = [list(column) for column in zip(*rounds, strict=True)]
                    rows.append(
                        (
                            f"{size:,}",
                            label,
                            [median_of(r) for r in runs],
                            [gain(r, runs[0]) for r in runs[1:]],
                            len(os.listdir(copies[0] / "jobs")),
                        )
                    )
                    # Each row as soon as measured: a long run keeps what it has.
                    print(rows[-1], file=sys.stderr, flush=True)
            finally:
                for process, _ in servers:
                    stop(process)

    print()
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s --timeout 60s;"
        f" servers in turn within each round; medians of {args.repeat} rounds"
    )
    print()
    print(
        "| files | endpoint | Toolkit req/s | jobstatus req/s | vs Toolkit"
        " | jobstatus, 2 workers | vs Toolkit | Toolkit p50 | jobstatus p50"
        " | errors | Toolkit's files after |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for size, label, medians, gains, files in rows:
        toolkit, one, two = medians
        print(
            f"| {size} | {label} | {toolkit['rps']:,.1f} | {one['rps']:,.0f}"
            f" | {gains[0]:,.1f} | {two['rps']:,.0f} | {gains[1]:,.1f}"
            f" | {toolkit['p50']:.1f} ms | {one['p50']:.2f} ms"
            f" | {toolkit['errors']:.0f}/{one['errors']:.0f}/{two['errors']:.0f}"
            f" | {files:,} |"
        )


if __name__ == "__main__":
    main()
