"""HTTP benchmark: jobstatus against the framework's floor, in one run.

Run by hand (not a test; needs wrk: apt-get install wrk):
    python bench/http/run.py [--jobs 100000] [--seconds 5] [--connections 16]

On loopback, wrk (another process) drives, in turn:

- the floor: a bare Starlette endpoint on the same uvicorn that parses a JSON
  body and returns a fixed body, once as large as a ``job/status`` answer and
  once as large as a ``jobs/status`` answer with ~1,000 matches;
- ``job/status`` on every store, and ``jobs/status`` (~1,000 matches of
  N jobs) on every store, through the Starlette adapter on uvicorn and the
  WSGI adapter on gunicorn.

It prints requests/s, p50 and p99, each as a ratio to the matching floor.
Each figure is the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from serving import start_server  # noqa: E402
from stores import build_files, build_sqlite, plan_jobs, start_redis, timed_migrate  # noqa: E402

KEY = "bench-key"
JOB = "/v1/toolkit/job/status"
JOBS = "/v1/toolkit/jobs/status"


def start(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    def argv(port: int) -> list[str]:
        return [str(HERE / "apps.py"), *[a.replace("PORT", str(port)) for a in args]]

    return start_server(argv)


def wrk(
    url: str, body: str, seconds: float, connections: int, workdir: str
) -> dict[str, float]:
    script = Path(workdir) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {body!r}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["x-api-key"] = "{KEY}"\n'
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": ms("50%"),
        "p99": ms("99%"),
        "errors": float(errors.group(1) if errors else 0)
        + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0),
    }


def measure(
    base: str, path: str, body: str, args: argparse.Namespace, workdir: str
) -> dict[str, float]:
    runs = [
        wrk(base + path, body, args.seconds, args.connections, workdir)
        for _ in range(args.repeat)
    ]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite,file,redis")
    parser.add_argument("--interfaces", default="asgi,wsgi")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="jobstatus-http-") as tmp:
        jobs = plan_jobs(args.jobs, time.time())
        known = jobs[len(jobs) // 2][0]
        build_files(Path(tmp) / "storage", jobs)
        build_sqlite(Path(tmp) / "jobs.db", jobs)
        urls = {
            "memory": "memory://",
            "sqlite": f"sqlite://{tmp}/jobs.db",
            "file": f"file://{tmp}/storage",
        }
        redis = start_redis(tmp) if "redis" in args.stores else None
        if redis is not None:
            timed_migrate(f"file://{tmp}/storage?index=off", redis[1])
            urls["redis"] = redis[1]
        one_body = f'{{"job_id": "{known}"}}'
        many_body = '{"since_seconds": 600}'

        rows: list[tuple[str, str, dict[str, float]]] = []
        sizes: dict[str, int] = {}
        try:
            for interface in args.interfaces.split(","):
                for name in args.stores.split(","):
                    if name not in urls:
                        continue
                    print(f"{name} / {interface} ...", file=sys.stderr, flush=True)
                    process, base = start(
                        ["jobstatus", urls[name], "PORT", interface, str(args.jobs)]
                    )
                    try:
                        for label, path, body in (
                            ("job/status", JOB, one_body),
                            ("jobs/status", JOBS, many_body),
                        ):
                            answer = httpx.post(
                                base + path, content=body, headers={"x-api-key": KEY}
                            )
                            assert answer.status_code == 200, answer.text[:200]
                            sizes[label] = len(answer.content)
                            rows.append(
                                (
                                    f"{label} · {name} · {interface}",
                                    label,
                                    measure(base, path, body, args, tmp),
                                )
                            )
                    finally:
                        process.terminate()
                        process.wait(30)
            floors: dict[str, dict[str, float]] = {}
            for label, size in sizes.items():
                print(f"floor ({size} B) ...", file=sys.stderr, flush=True)
                process, base = start(["floor", str(size), "PORT"])
                try:
                    floors[label] = measure(base, "/floor", many_body, args, tmp)
                finally:
                    process.terminate()
                    process.wait(30)
        finally:
            if redis is not None:
                redis[0].terminate()
                redis[0].wait()

    print()
    print(
        f"{args.jobs:,} jobs; wrk -t1 -c{args.connections} -d{args.seconds:g}s,"
        f" median of {args.repeat}"
    )
    print()
    print("| target | req/s | vs floor | p50 | p99 | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    floor_rows = [
        (f"floor, {size:,} B body", label, floors[label])
        for label, size in sizes.items()
    ]
    for name, label, r in floor_rows + rows:
        cells = [
            name,
            f"{r['rps']:,.0f}",
            f"{r['rps'] / floors[label]['rps']:.2f}",
            f"{r['p50']:.2f} ms",
            f"{r['p99']:.2f} ms",
            f"{r['errors']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
