"""Where a request's time goes: py-spy on a server under wrk's load.

Run by hand (needs wrk and py-spy: apt-get install wrk; pip install py-spy;
py-spy needs ptrace, i.e. root or CAP_SYS_PTRACE):

    python bench/http/hotspots.py STORE ENDPOINT [--jobs 100000] [--seconds 8]

STORE is memory, sqlite, file or redis; ENDPOINT is job or jobs. The server is
the one bench/http/run.py measures, on 100,000 Toolkit-shaped jobs. py-spy
samples every thread of it while wrk drives it, then this prints how busy
each kind of thread was (share of one core), and the functions where each
spent its own time. py-spy also samples threads that are blocked (in a queue,
a lock, epoll): those samples are counted as waiting, not as busy.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from run import JOB, JOBS, post_script, start  # noqa: E402
from stores import build_files, build_sqlite, plan_jobs, start_redis, timed_migrate  # noqa: E402

RATE = 200  # samples per second per thread

# Leaf functions where a thread sits blocked, not working.
WAITS = re.compile(
    r"^(Condition\.wait|Event\.wait|StoreThreads\._work|EpollSelector\.select"
    r"|InotifyFD\._check_inotify_fd|Thread\._wait_for_tstate_lock) "
)


def summarize(raw: Path, seconds: float, top: int) -> None:
    busy: collections.Counter[str] = collections.Counter()
    waiting: collections.Counter[str] = collections.Counter()
    own: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        # "thread (1234): jobstatus-store" -> "jobstatus-store"
        kind = re.sub(r"^thread \(\d+\): ", "", thread.strip('"'))
        kind = re.sub(r"-\d+$", "", kind)
        leaf = re.sub(r" \(\S*/", " (", frames[-1]) if frames else "?"
        if WAITS.match(leaf):
            waiting[kind] += int(count)
        else:
            busy[kind] += int(count)
            own[kind][leaf] += int(count)
    for kind, samples in busy.most_common():
        print(
            f"\n{kind}: busy {samples / (RATE * seconds):.0%} of a core,"
            f" waiting {waiting[kind] / (RATE * seconds):.0%}"
        )
        for frame, count in own[kind].most_common(top):
            print(f"  {count / samples:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", choices=["memory", "sqlite", "file", "redis"])
    parser.add_argument("endpoint", choices=["job", "jobs"])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jobstatus-profile-") as tmp:
        jobs = plan_jobs(args.jobs, time.time())
        url = {"memory": "memory://"}.get(args.store, "")
        redis = None
        if args.store == "sqlite":
            build_sqlite(Path(tmp) / "jobs.db", jobs)
            url = f"sqlite://{tmp}/jobs.db"
        elif args.store in ("file", "redis"):
            build_files(Path(tmp) / "storage", jobs)
            url = f"file://{tmp}/storage"
            if args.store == "redis":
                redis, url_ = start_redis(tmp)
                timed_migrate(url + "?index=off", url_)
                url = url_
        path, body = (
            (JOB, f'{{"job_id": "{jobs[len(jobs) // 2][0]}"}}')
            if args.endpoint == "job"
            else (JOBS, '{"since_seconds": 600}')
        )
        server, base = start(["jobstatus", url, "PORT", "asgi", str(args.jobs)])
        script = post_script(tmp, body)
        raw = Path(tmp) / "profile.txt"
        try:
            wrk = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds + 3:g}s"]
            load = subprocess.Popen(
                [*wrk, "-s", str(script), base + path],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)  # past wrk's connection set-up
            spy = ["py-spy", "record", "-p", str(server.pid), "-d", f"{args.seconds:g}"]
            subprocess.run(
                [*spy, "-r", str(RATE), "--threads", "--format", "raw", "-o", str(raw)],
                check=True,
                capture_output=True,
            )
            out, _ = load.communicate()
        finally:
            server.terminate()
            server.wait(30)
            if redis is not None:
                redis.terminate()
                redis.wait()
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        rate = rps.group(1) if rps else "?"
        print(f"{args.store} · {args.endpoint}/status: {rate} req/s")
        summarize(raw, args.seconds, args.top)


if __name__ == "__main__":
    main()
