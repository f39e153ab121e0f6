"""Load with writers: `jobstatus serve` on each store, driven from other processes.

Run by hand (not a test):
    python bench/load.py [--seconds 10] [--readers 2] [--writers 2]

For each store (SQLite, the file store) and each interface (asgi, wsgi), it
starts `jobstatus serve` on a loopback port, then for a bounded time:

- reader processes poll `job/status` and `jobs/status` over keep-alive
  connections and time every answer;
- writer processes keep rewriting their jobs straight into the store, as the
  Toolkit (or a worker) would.

At the end every job written is read back over HTTP and must carry the last
status its writer wrote. It prints requests/s, p50/p99 latency, errors and lost
jobs; the bar is zero errors and zero lost jobs. (`memory://` is left out: no
other process can write into it.)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from serving import start_server

KEY = "load-key"
JOB = "/v1/toolkit/job/status"
JOBS = "/v1/toolkit/jobs/status"
JOBS_PER_WRITER = 200
MAX_REQUESTS_PER_READER = 200_000


def writer(url: str, n: int, seconds: float) -> dict[str, str]:
    from jobstatus_backends import store_from_url

    store = store_from_url(url)
    last: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        job_id = f"w{n}-{i % JOBS_PER_WRITER}"
        status = f"step-{i}"
        store.put({"job_id": job_id, "job_status": status, "response": {"i": i}})
        last[job_id] = status
        i += 1
        time.sleep(0.002)  # a busy worker pool, not a tight loop
    store.close()
    return last


def reader(base: str, seconds: float, writers: int) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    errors = 0
    rng = random.Random(os.getpid())
    deadline = time.monotonic() + seconds
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        while time.monotonic() < deadline and len(latencies) < MAX_REQUESTS_PER_READER:
            if rng.random() < 0.8:
                job_id = f"w{rng.randrange(writers)}-{rng.randrange(JOBS_PER_WRITER)}"
                path, body = JOB, {"job_id": job_id}
            else:
                path, body = JOBS, {"since_seconds": 60}
            start = time.perf_counter()
            try:
                code = http.post(path, json=body).status_code
            except httpx.HTTPError:
                code = 0
            latencies.append(time.perf_counter() - start)
            if code not in (200, 404):  # 404: a job its writer has not reached yet
                errors += 1
    return latencies, errors, len(latencies)


def start_jobstatus(
    url: str, interface: str, cwd: str
) -> tuple[subprocess.Popen[bytes], str]:
    return start_server(
        lambda port: (
            [
                "-m",
                "jobstatus_adapters.cli",
                "serve",
                "--store",
                url,
                "--port",
                str(port),
                "--interface",
                interface,
            ]
        ),
        cwd=cwd,
        env={**os.environ, "API_KEY": KEY},
    )


def run(
    url: str, interface: str, args: argparse.Namespace, cwd: str
) -> dict[str, float]:
    process, base = start_jobstatus(url, interface, cwd)
    try:
        with multiprocessing.get_context("spawn").Pool(
            args.readers + args.writers
        ) as pool:
            writes = [
                pool.apply_async(writer, (url, n, args.seconds))
                for n in range(args.writers)
            ]
            reads = [
                pool.apply_async(reader, (base, args.seconds, args.writers))
                for _ in range(args.readers)
            ]
            finals: dict[str, str] = {}
            for result in writes:
                finals.update(result.get())
            latencies: list[float] = []
            errors = 0
            for result in reads:
                lat, err, _ = result.get()
                latencies += lat
                errors += err
        time.sleep(1.5)  # the file store's observer latency
        lost = 0
        headers = {"x-api-key": KEY, "content-type": "application/json"}
        with httpx.Client(base_url=base, headers=headers) as http:
            for job_id, status in finals.items():
                answer = http.post(JOB, json={"job_id": job_id})
                if (
                    answer.status_code != 200
                    or answer.json()["response"]["job_status"] != status
                ):
                    lost += 1
            listing = http.post(JOBS, json={"since_seconds": 3600}).json()["response"]
            lost += sum(
                1 for job_id, status in finals.items() if listing.get(job_id) != status
            )
    finally:
        process.terminate()
        process.wait(30)
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / args.seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
        "jobs": len(finals),
        "lost": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--interfaces", default="asgi,wsgi")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="jobstatus-load-") as tmp:
        (Path(tmp) / "storage").mkdir()
        stores = {
            "sqlite": f"sqlite://{tmp}/jobs.db",
            "file": f"file://{tmp}/storage",
        }
        for name, url in stores.items():
            for interface in args.interfaces.split(","):
                print(f"{name} / {interface} ...", file=sys.stderr, flush=True)
                rows.append((name, interface, run(url, interface, args, tmp)))
    print()
    print(
        "| store | interface | requests | req/s | p50 | p99 | errors | written | lost |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, interface, r in rows:
        cells = [
            name,
            interface,
            f"{r['requests']:,.0f}",
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.2f} ms",
            f"{r['p99_ms']:.2f} ms",
            f"{r['errors']:.0f}",
            f"{r['jobs']:.0f}",
            f"{r['lost']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    failed = any(r["errors"] or r["lost"] for _, _, r in rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
