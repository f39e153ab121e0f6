"""HTTP benchmark: jobstatus against the framework's floor, in one run.

Run by hand (not a test; needs wrk: apt-get install wrk; and the fast extra,
pip install '.[fast]', for the stack `jobstatus serve` runs by default):
    python bench/http/run.py [--jobs 100000] [--seconds 3] [--connections 16]
        [--stores memory,sqlite,file,redis,postgres] [--interfaces asgi,wsgi]
        [--workers-stores memory,sqlite,redis] [--wrk-cpu 1]
        [--workers-pipeline 1] [--workers-connections 16,64]
        [--generator wrk|loadgen] [--nap-us 1000]
        [--redis-batch] [--skip-floor] [--spread] [--baseline DIR]

On loopback, wrk (another process) drives, in turn:

- the floor: a bare Starlette endpoint on the same uvicorn that parses a JSON
  body and returns a fixed body, once as large as a ``job/status`` answer and
  once as large as a ``jobs/status`` answer with ~1,000 matches;
- ``job/status``, ``jobs/status`` (~1,000 matches of N jobs),
  ``GET /v1/job/{id}`` and ``GET /v1/jobs?limit=100`` on every store
  (PostgreSQL in a throwaway cluster), through the Starlette adapter on
  uvicorn — on the loop and HTTP parser ``jobstatus serve`` picks, the floor
  too — and the WSGI adapter;
- with --spread, ``job/status`` and ``GET /v1/job/{id}`` again, each
  request asking about a job drawn at random from all N (the other rows ask
  about one job, as a client polling it does: the SQLite and file stores
  then answer from their kept answers, docs/stores.md);
- then ``jobstatus serve`` with one worker against ``--workers 2`` on the
  --workers-stores, wrk pinned to --wrk-cpu with taskset (and with
  --workers-pipeline N, writing N requests at once per connection; with
  --workers-connections, at each of those connection counts, each set-up's
  peak taken: its capacity); with --baseline, the baseline's one and two
  workers in the same rounds.

With --generator loadgen, ``loadgen.c`` (built with cc) drives instead of
wrk: one request written --workers-pipeline times per connection, answers
read up to 1 MiB at a time after a pause of --nap-us, each checked and
counted — a fraction of wrk's CPU an answer, which on two cores is CPU the
workers can use (docs/performance.md, "A load generator that takes less").

It prints requests/s (also as a ratio to the floor serving a body of the
same size), the server's CPU time per request (its own and its children's,
from /proc: steadier than requests/s on a shared machine), p50 and p99.
Each target run comes right after runs of its floors; figures are medians of
--repeat such rounds. WSGI rows are also compared with a bare WSGI app under
the same gunicorn set-up. The workers table also gives the cores the server
kept busy over a run and the cores all else took (wrk, a store's server, the
kernel's network work; from /proc/stat), and of those, wrk's own (its
rusage) and the store's server's (Redis; from /proc): two workers on two
cores can use only what the others leave them. And, per 1,000 requests, how
often the server's processes slept (waiting for a reply or for work) and
were preempted, and how often the store's server woke (from /proc).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from protocol import start_postgres  # noqa: E402
from serving import start_server  # noqa: E402
from stores import build_files, build_sqlite, plan_jobs, start_redis, timed_migrate  # noqa: E402

from jobstatus_adapters.serverstack import server_stack  # noqa: E402

KEY = "bench-key"
JOB = "/v1/toolkit/job/status"
JOBS = "/v1/toolkit/jobs/status"


def start(
    args: list[str], code: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """apps.py with ``args``; ``code``: a directory of the packages to run
    instead of this checkout's (``--baseline``)."""

    def argv(port: int) -> list[str]:
        return [str(HERE / "apps.py"), *[a.replace("PORT", str(port)) for a in args]]

    return start_server(argv, env=code_env(code))


def code_env(code: str | None) -> dict[str, str] | None:
    if code is None:
        return None
    path = os.pathsep.join([code, *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path}


def process_tree(pid: int) -> dict[int, float]:
    """A process and its descendants (gunicorn's worker is the master's
    child), each with its CPU time (user + system) in seconds, from /proc."""
    stats: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # after the name: state ppid ... utime(12) stime(13), in clock ticks
        stats[int(stat.parent.name)] = (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
        )
    tree = {pid}
    # A process's stat counts all its threads; children are their own
    # entries: two levels reach gunicorn's worker, a third to be safe.
    for _ in range(3):
        tree |= {child for child, (parent, _) in stats.items() if parent in tree}
    ticks = os.sysconf("SC_CLK_TCK")
    return {member: stats[member][1] / ticks for member in tree if member in stats}


def cpu_seconds(pid: int) -> float:
    return sum(process_tree(pid).values())


def context_switches(pids: Iterable[int]) -> tuple[int, int]:
    """Voluntary (the thread slept: it waited for a reply, or for work) and
    involuntary (another process took its core) context switches of every
    thread of ``pids``."""
    counts = [0, 0]
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                continue  # gone meanwhile
            for line in lines:
                if line.startswith("voluntary_ctxt_switches"):
                    counts[0] += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    counts[1] += int(line.split()[1])
    return counts[0], counts[1]


def machine_busy() -> tuple[float, float]:
    """(CPU seconds all cores have spent busy, from /proc/stat; the
    monotonic clock): two readings tell how many cores a run kept busy."""
    fields = [
        int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal: idle and iowait rest
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / ticks, time.monotonic()


#: In a path or body: each request puts a job id drawn at random there.
ANY_ID = "$ID"


def request_script(
    workdir: str,
    method: str,
    body: str | None,
    path: str | None = None,
    pipeline: int = 1,
) -> Path:
    """A wrk script sending ``method`` (with ``body`` as JSON, if any) and the
    benchmark's API key; where ``path`` or ``body`` holds ``ANY_ID``, each
    request draws a job id from ``ids.txt`` in ``workdir``. ``pipeline``:
    requests written at once on a connection (HTTP/1.1 pipelining), each
    answered and counted as one."""
    script = Path(workdir) / "request.lua"
    lines = [f'wrk.method = "{method}"', f'wrk.headers["x-api-key"] = "{KEY}"']
    if body is not None:
        lines += [
            f"wrk.body = {body!r}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    if ANY_ID in (path or "") + (body or ""):
        ids = Path(workdir) / "ids.txt"
        lines += [
            "local ids = {}",
            f'for line in io.lines("{ids}") do ids[#ids + 1] = line end',
            "local function one()",
            "  local id = ids[math.random(#ids)]",
            f"  local path = ({(path or '')!r}):gsub('%$ID', id)",
            f"  local body = ({(body or '')!r}):gsub('%$ID', id)",
            "  return wrk.format(nil, path, nil, body)",
            "end",
        ]
        if pipeline == 1:
            lines += ["request = one"]
        else:
            lines += [
                "request = function()",
                "  local batch = {}",
                f"  for i = 1, {pipeline} do batch[i] = one() end",
                "  return table.concat(batch)",
                "end",
            ]
    elif pipeline > 1:
        # Made once: wrk's own request is too, without a script.
        lines += [
            "init = function(args)",
            "  local batch = {}",
            f"  for i = 1, {pipeline} do batch[i] = wrk.format() end",
            "  pipelined = table.concat(batch)",
            "end",
            "request = function() return pipelined end",
        ]
    script.write_text("\n".join(lines) + "\n")
    return script


def post_script(workdir: str, body: str) -> Path:
    return request_script(workdir, "POST", body)


@dataclass(frozen=True)
class Load:
    """What wrk sends, how long, and on which CPU it runs (None: any)."""

    method: str
    body: str | None
    seconds: float
    connections: int
    cpu: int | None = None
    timeout: float = 2  # wrk's own default: slower answers count as errors
    pipeline: int = 1
    #: "wrk", or "loadgen" (loadgen.c: less CPU an answer, see its head)
    generator: str = "wrk"
    #: loadgen's pause between reads, letting answers gather (microseconds)
    nap_us: int = 0


def drive(
    url: str, pid: int, load: Load, workdir: str, store_pid: int | None = None
) -> dict[str, float]:
    """One run of ``load``'s generator against ``url``."""
    if load.generator == "loadgen":
        return loadgen(url, pid, load, workdir, store_pid)
    return wrk(url, pid, load, workdir, store_pid)


def usage_of(
    pid: int, store_pid: int | None, run: Callable[[], tuple[str, float]]
) -> tuple[str, dict[str, float]]:
    """``run``'s output (it returns the output and the generator's CPU
    seconds), and what the server (``pid``), the store's server and
    everything else took meanwhile: CPU, cores, context switches."""
    tree = process_tree(pid)
    cpu_before = sum(tree.values())
    switches_before = context_switches(tree)
    store_before = 0.0 if store_pid is None else cpu_seconds(store_pid)
    wakes_before = 0 if store_pid is None else context_switches([store_pid])[0]
    busy_before, began = machine_busy()
    out, generator_cpu = run()
    cpu = cpu_seconds(pid) - cpu_before
    sleeps, preempted = (
        after - before
        for after, before in zip(context_switches(tree), switches_before, strict=True)
    )
    store = 0.0 if store_pid is None else cpu_seconds(store_pid) - store_before
    wakes = 0 if store_pid is None else context_switches([store_pid])[0] - wakes_before
    busy_after, ended = machine_busy()
    return out, {
        "cpu": cpu,
        # Cores the server kept busy, and all else (the load generator, a
        # store's server): on a 2-core machine what the others take, the
        # workers cannot.
        "server_cores": cpu / (ended - began),
        "other_cores": max(0.0, busy_after - busy_before - cpu) / (ended - began),
        "wrk_cores": generator_cpu / (ended - began),
        "store_cores": store / (ended - began),
        # Each of the store's server's wake-ups on a core a worker holds
        # preempts that worker: what two Redis workers lose on two cores.
        "sleeps": sleeps,
        "preempted": preempted,
        "store_wakes": wakes,
    }


def per_request(used: dict[str, float], answers: float) -> dict[str, float]:
    """``usage_of``'s figures with the CPU as µs a request and the context
    switches per 1,000 requests."""
    answers = max(answers, 1)
    counted = ("sleeps", "preempted", "store_wakes")
    return {
        "cpu_us": used["cpu"] / answers * 1e6,
        **{key: used[key] / answers * 1000 for key in counted},
        **{k: v for k, v in used.items() if k != "cpu" and k not in counted},
    }


def run_timed(argv: list[str]) -> tuple[str, float]:
    """``argv``'s standard output and CPU seconds; fails on a non-zero exit."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with process.stdout as stream:
        out = stream.read()
    # wait4, not wait: the generator's own CPU time (taskset execs it, same
    # pid).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, argv, out)
    return out, usage.ru_utime + usage.ru_stime


def loadgen_binary(workdir: str) -> str:
    """loadgen.c, compiled once into ``workdir``."""
    binary = Path(workdir) / "loadgen"
    if not binary.exists():
        subprocess.run(
            ["cc", "-O2", "-o", str(binary), str(HERE / "loadgen.c")], check=True
        )
    return str(binary)


def loadgen(
    url: str, pid: int, load: Load, workdir: str, store_pid: int | None = None
) -> dict[str, float]:
    """One loadgen run: what ``wrk`` measures, from loadgen's answers."""
    assert ANY_ID not in url + (load.body or ""), "loadgen sends one request"
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()  # type: ignore[union-attr]
    lines = [
        f"{load.method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"x-api-key: {KEY}",
    ]
    body = (load.body or "").encode()
    if load.body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    request = Path(workdir) / "request.bin"
    request.write_bytes("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
    pin = [] if load.cpu is None else ["taskset", "-c", str(load.cpu)]
    argv = [
        *pin,
        loadgen_binary(workdir),
        host,
        port,
        str(load.connections),
        f"{load.seconds:g}",
        str(load.pipeline),
        str(request),
        str(load.nap_us),
    ]
    out, used = usage_of(pid, store_pid, lambda: run_timed(argv))
    fields = out.split()
    got = {fields[i]: float(fields[i + 1]) for i in range(0, len(fields), 2)}
    return {
        "rps": got["answers"] / got["seconds"],
        **per_request(used, got["answers"]),
        "p50": got["p50_ms"],
        "p99": got["p99_ms"],
        "errors": got["errors"],
    }


def wrk(
    url: str, pid: int, load: Load, workdir: str, store_pid: int | None = None
) -> dict[str, float]:
    """One wrk run; also the server's CPU time per request it answered, and
    the cores the server, wrk and the store's own server (``store_pid``, if
    any) kept busy."""
    path = "/" + url.split("/", 3)[3]
    script = request_script(workdir, load.method, load.body, path, load.pipeline)
    url = url.replace(ANY_ID, "x")  # wrk's own request, never sent
    pin = [] if load.cpu is None else ["taskset", "-c", str(load.cpu)]
    argv = [
        *pin,
        "wrk",
        "-t1",
        f"-c{load.connections}",
        f"-d{load.seconds:g}s",
        f"--timeout={load.timeout:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out, used = usage_of(pid, store_pid, lambda: run_timed(argv))

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        **per_request(used, requests),
        "p50": ms("50%"),
        "p99": ms("99%"),
        "errors": float(errors.group(1) if errors else 0)
        + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0),
    }


FLOORS = {"asgi": "floor", "wsgi": "wsgi-floor"}


Server = tuple[str, int]  # URL, pid


def paired(
    target: Server,
    floors: list[Server],
    load: Load,
    repeat: int,
    workdir: str,
    store_pid: int | None = None,
) -> list[list[dict[str, float]]]:
    """--repeat rounds: a run of each floor, then one of the target.

    The machine's load drifts over a run of several minutes; a ratio of runs
    a few seconds apart is steadier than one of two far-apart medians.
    Returns the runs of each floor, then the target's.
    """
    rounds = [
        [drive(url, pid, load, workdir, store_pid) for url, pid in (*floors, target)]
        for _ in range(repeat)
    ]
    return [list(runs) for runs in zip(*rounds, strict=True)]


def peaks(
    servers: list[Server],
    loads: list[Load],
    repeat: int,
    workdir: str,
    store_pid: int | None = None,
) -> list[list[dict[str, float]]]:
    """--repeat rounds of a run of each server under each load in turn;
    of each round, each server's run that served the most requests a second.

    That is a server's capacity: a store reached over a round trip needs
    more requests in flight to keep two workers busy than one (Little's law),
    so a single connection count can measure one set-up at its peak and the
    other short of it. Each run carries its load's ``connections``.
    """
    rounds = []
    for _ in range(repeat):
        runs = [
            [
                {
                    **drive(url, pid, load, workdir, store_pid),
                    "connections": float(load.connections),
                }
                for url, pid in servers
            ]
            for load in loads
        ]
        columns = zip(*runs, strict=True)
        rounds.append([max(column, key=lambda run: run["rps"]) for column in columns])
    return [list(runs) for runs in zip(*rounds, strict=True)]


def peaked_at(runs: list[dict[str, float]]) -> str:
    """The connection counts of a set-up's peaks: ``16:2 64:3`` is 16
    connections in two rounds, 64 in three."""
    counted = collections.Counter(int(run["connections"]) for run in runs)
    return " ".join(f"{count}:{times}" for count, times in sorted(counted.items()))


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def ratio(
    target: list[dict[str, float]], floor: list[dict[str, float]], key: str = "rps"
) -> float:
    return statistics.median(
        t[key] / f[key] for t, f in zip(target, floor, strict=True)
    )


def endpoints(known: str, spread: int = 0) -> list[tuple[str, str, str, str | None]]:
    """(label, method, path, body) of each endpoint measured; with
    ``spread``, also the job endpoints asked about any of that many jobs
    (``ANY_ID``), not one job over and over."""
    measured = [
        ("job/status", "POST", JOB, f'{{"job_id": "{known}"}}'),
        ("jobs/status", "POST", JOBS, '{"since_seconds": 600}'),
        ("GET /v1/job/{id}", "GET", f"/v1/job/{known}", None),
        ("GET /v1/jobs?limit=100", "GET", "/v1/jobs?limit=100", None),
    ]
    if spread:
        any_of = f"any of {spread:,}"
        measured += [
            (f"job/status, {any_of}", "POST", JOB, f'{{"job_id": "{ANY_ID}"}}'),
            (f"GET /v1/job/{{id}}, {any_of}", "GET", f"/v1/job/{ANY_ID}", None),
        ]
    return measured


def start_jobstatus(
    name: str,
    url: str,
    jobs: int,
    interface: str,
    workers: int,
    code: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """The server measured: ``memory://`` through apps.py (only the serving
    process can fill it); with several workers, every other store through
    ``jobstatus serve --workers N`` itself, as a user runs it."""
    if name == "memory" or workers == 1:
        return start(
            ["jobstatus", url, "PORT", interface, str(jobs), str(workers)], code
        )

    def argv(port: int) -> list[str]:
        return [
            "-m",
            "jobstatus_adapters.cli",
            "serve",
            "--store",
            url,
            "--port",
            str(port),
            "--interface",
            interface,
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]

    return start_server(argv, env={**(code_env(code) or os.environ), "API_KEY": KEY})


def check(base: str, method: str, path: str, body: str | None, known: str) -> int:
    """The answer's size, after checking it is a 200 (``ANY_ID``: ``known``)."""
    path = path.replace(ANY_ID, known)
    body = None if body is None else body.replace(ANY_ID, known)
    answer = httpx.request(
        method, base + path, content=body, headers={"x-api-key": KEY}, timeout=30
    )
    assert answer.status_code == 200, (path, answer.text[:200])
    return len(answer.content)


def open_stores(
    tmp: str,
    names: list[str],
    jobs: list[tuple[str, float, dict[str, object]]],
    *,
    redis_batch: bool = False,
) -> tuple[dict[str, str], dict[str, subprocess.Popen[bytes]], list[object]]:
    """Every store named, holding ``jobs``: URLs, server processes by store
    name, and the PostgreSQL cluster's stop function (if any)."""
    build_files(Path(tmp) / "storage", jobs)
    build_sqlite(Path(tmp) / "jobs.db", jobs)
    urls = {
        "memory": "memory://",
        "sqlite": f"sqlite://{tmp}/jobs.db",
        "file": f"file://{tmp}/storage",
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    stops: list[object] = []
    source = f"file://{tmp}/storage?index=off"
    if "redis" in names:
        redis = start_redis(tmp, batch=redis_batch)
        if redis is None:
            sys.exit("redis-server not found: leave redis out of --stores")
        redis_process, urls["redis"] = redis
        processes["redis"] = redis_process
        timed_migrate(source, urls["redis"])
    if "postgres" in names:
        # Its own directory: the cluster runs as the postgres user when root,
        # who cannot enter this run's private temporary directory.
        pg_dir = Path(tempfile.mkdtemp(prefix="jobstatus-http-pg-"))
        stop, urls["postgres"] = start_postgres(pg_dir)

        def stop_and_remove() -> None:
            stop()
            shutil.rmtree(pg_dir, ignore_errors=True)

        stops.append(stop_and_remove)
        timed_migrate(source, urls["postgres"])
    return urls, processes, stops


def code_dirs(args: argparse.Namespace) -> dict[str, str | None]:
    """The codes measured, by name: this checkout's (None), after the
    --baseline's packages if given."""
    codes: dict[str, str | None] = {"this": None}
    if args.baseline:
        codes = {"baseline": os.path.abspath(args.baseline), **codes}
    return codes


def floor_table(
    args: argparse.Namespace, urls: dict[str, str], known: str, tmp: str
) -> None:
    processes: list[subprocess.Popen[bytes]] = []
    codes = code_dirs(args)
    # (kind, label) -> (body size, server); kind is "floor" or "wsgi-floor".
    floors: dict[tuple[str, str], tuple[int, Server]] = {}
    floor_runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    # name, medians, requests/s vs floor, vs gunicorn floor, and CPU/request vs
    # the floor of its own server (gunicorn's for WSGI rows)
    rows: list[tuple[str, dict[str, float], float, float | None, float]] = []

    def floor_server(kind: str, label: str, size: int) -> Server:
        if (kind, label) not in floors:
            process, base = start([kind, str(size), "PORT"])
            processes.append(process)
            floors[kind, label] = (size, (base + "/floor", process.pid))
        return floors[kind, label][1]

    try:
        for interface in args.interfaces.split(","):
            for name in args.stores.split(","):
                print(f"{name} / {interface} ...", file=sys.stderr, flush=True)
                # The baseline's server beside this code's, measured in the
                # same rounds: each round runs the floors, the baseline, then
                # this code.
                started = {
                    code: start_jobstatus(
                        name, urls[name], args.jobs, interface, 1, directory
                    )
                    for code, directory in codes.items()
                }
                try:
                    for label, method, path, body in endpoints(known, args.spread):
                        # All floors of a label serve the size first seen.
                        size = check(started["this"][1], method, path, body, known)
                        for _, base in started.values():
                            check(base, method, path, body, known)
                        kinds = sorted({"floor", FLOORS[interface]})
                        servers = [floor_server(k, label, size) for k in kinds]
                        targets = [
                            (base + path, process.pid)
                            for process, base in started.values()
                        ]
                        load = Load(
                            method,
                            body,
                            args.seconds,
                            args.connections,
                            generator=args.generator,
                            nap_us=args.nap_us,
                        )
                        runs = paired(
                            targets[-1],
                            [*servers, *targets[:-1]],
                            load,
                            args.repeat,
                            tmp,
                        )
                        by_kind = dict(zip(kinds, runs, strict=False))
                        for kind, kind_runs in by_kind.items():
                            floor_runs.setdefault((kind, label), []).extend(kind_runs)
                        own = by_kind.get("wsgi-floor")
                        for code, target in zip(codes, runs[len(kinds) :], strict=True):
                            suffix = "" if len(codes) == 1 else f" · {code}"
                            rows.append(
                                (
                                    f"{label} · {name} · {interface}{suffix}",
                                    median_of(target),
                                    ratio(target, by_kind["floor"]),
                                    None if own is None else ratio(target, own),
                                    ratio(target, own or by_kind["floor"], "cpu_us"),
                                )
                            )
                finally:
                    for process, _ in started.values():
                        process.terminate()
                        process.wait(30)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)

    print()
    print(
        f"{args.jobs:,} jobs; {server_stack().describe()};"
        f" {generator_name(args)} -c{args.connections} -d{args.seconds:g}s;"
        f" each target run right after runs of its floors; medians of"
        f" {args.repeat} rounds"
    )
    print()
    print(
        "| target | req/s | vs floor | vs gunicorn floor | CPU/req | CPU vs its floor"
        " | p50 | p99 | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"floor": "floor", "wsgi-floor": "gunicorn floor"}
    floor_rows = [
        (
            f"{names[kind]} ({label}), {size:,} B body",
            median_of(floor_runs[kind, label]),
            None,
            None,
            None,
        )
        for (kind, label), (size, _) in sorted(floors.items())
    ]
    for name, r, vs_floor, vs_own, cpu_ratio in floor_rows + rows:
        cells = [
            name,
            f"{r['rps']:,.0f}",
            "—" if vs_floor is None else f"{vs_floor:.2f}",
            "—" if vs_own is None else f"{vs_own:.2f}",
            f"{r['cpu_us']:.0f} µs",
            "—" if cpu_ratio is None else f"{cpu_ratio:.2f}x",
            f"{r['p50']:.2f} ms",
            f"{r['p99']:.2f} ms",
            f"{r['errors']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


def workers_table(
    args: argparse.Namespace,
    urls: dict[str, str],
    known: str,
    tmp: str,
    store_servers: dict[str, subprocess.Popen[bytes]],
) -> None:
    """One worker against two, on the same store, in alternating runs; with
    --baseline, the baseline's one and two workers in the same rounds."""
    codes = code_dirs(args)
    rows = []
    for name in args.workers_stores.split(","):
        print(f"{name} / 1 and 2 workers ...", file=sys.stderr, flush=True)
        servers = [
            start_jobstatus(name, urls[name], args.jobs, "asgi", n, directory)
            for directory in codes.values()
            for n in (1, 2)
        ]
        try:
            for label, method, path, body in endpoints(known)[:2]:
                for _, base in servers:
                    check(base, method, path, body, known)
                loads = [
                    Load(
                        method,
                        body,
                        args.seconds,
                        connections,
                        args.wrk_cpu,
                        pipeline=args.workers_pipeline,
                        generator=args.generator,
                        nap_us=args.nap_us,
                    )
                    for connections in args.workers_connections
                ]
                runs = peaks(
                    [(base + path, process.pid) for process, base in servers],
                    loads,
                    args.repeat,
                    tmp,
                    store_servers[name].pid if name in store_servers else None,
                )
                for index, code in enumerate(codes):
                    one, two = runs[2 * index : 2 * index + 2]
                    suffix = "" if len(codes) == 1 else f" · {code}"
                    rows.append(
                        (
                            f"{label} · {name}{suffix}",
                            median_of(one),
                            median_of(two),
                            [
                                t["rps"] / o["rps"]
                                for t, o in zip(two, one, strict=True)
                            ],
                            f"{peaked_at(one)} / {peaked_at(two)}",
                        )
                    )
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(30)
    pin = "any CPU" if args.wrk_cpu is None else f"taskset -c {args.wrk_cpu}"
    pipelined = (
        f", {args.workers_pipeline} requests pipelined per write"
        if args.workers_pipeline > 1
        else ""
    )
    counts = ",".join(map(str, args.workers_connections))
    peak = (
        "; of each round, each set-up's run at its peak"
        if len(args.workers_connections) > 1
        else ""
    )
    batch = "; redis-server SCHED_BATCH" if args.redis_batch else ""
    print()
    print(
        f"{args.jobs:,} jobs; {server_stack().describe()}; {generator_name(args)}"
        f" -c{counts} -d{args.seconds:g}s on {pin}{pipelined};"
        f" servers unpinned{batch}; medians of {args.repeat} alternating"
        f" rounds{peak}"
    )
    print()
    print(
        "| target | 1 worker req/s | 2 workers req/s | 2 / 1 | rounds' 2 / 1"
        " | connections at the peak, 1 / 2 | CPU/req 1 | CPU/req 2"
        " | cores: server, others (generator, store) (1)"
        " | cores: server, others (generator, store) (2)"
        " | per 1,000 requests: server's sleeps, preempted; store's wake-ups,"
        " 1 / 2 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def switches(run: dict[str, float]) -> str:
        return f"{run['sleeps']:.0f}, {run['preempted']:.0f}; {run['store_wakes']:.0f}"

    def cores(run: dict[str, float]) -> str:
        return (
            f"{run['server_cores']:.2f}, {run['other_cores']:.2f}"
            f" ({run['wrk_cores']:.2f}, {run['store_cores']:.2f})"
        )

    for name, one, two, gains, at in rows:
        # The median, and the spread of the rounds it is the median of.
        print(
            f"| {name} | {one['rps']:,.0f} | {two['rps']:,.0f}"
            f" | {statistics.median(gains):.2f}"
            f" | {min(gains):.2f} to {max(gains):.2f}"
            f" | {at}"
            f" | {one['cpu_us']:.0f} µs | {two['cpu_us']:.0f} µs"
            f" | {cores(one)} | {cores(two)}"
            f" | {switches(one)} / {switches(two)} |"
        )


def generator_name(args: argparse.Namespace) -> str:
    if args.generator == "loadgen":
        return f"loadgen (naps of {args.nap_us} µs)"
    return "wrk -t1"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def counts(text: str) -> list[int]:
    return [positive(count) for count in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite,file,redis,postgres")
    parser.add_argument("--interfaces", default="asgi,wsgi")
    parser.add_argument(
        "--workers-stores",
        default="memory,sqlite,redis",
        help="stores measured with 1 and 2 workers; empty: none",
    )
    parser.add_argument(
        "--wrk-cpu",
        type=int,
        default=1,
        help="CPU wrk is pinned to in the workers runs",
    )
    parser.add_argument(
        "--workers-pipeline",
        type=positive,
        default=1,
        help="requests wrk writes at once per connection in the workers runs"
        " (HTTP pipelining): wrk then costs a fraction of the CPU per request,"
        " which on a 2-core machine it takes from the workers",
    )
    parser.add_argument(
        "--generator",
        choices=["wrk", "loadgen"],
        default="wrk",
        help="the load generator: wrk, or loadgen.c (built with cc), which"
        " takes a fraction of wrk's CPU an answer (--nap-us)",
    )
    parser.add_argument(
        "--nap-us",
        type=int,
        default=1000,
        help="loadgen's pause before each wait for answers (microseconds)",
    )
    parser.add_argument(
        "--workers-connections",
        type=counts,
        help="connection counts the workers runs try, comma-separated"
        " (default: --connections); with several, each round takes each"
        " set-up's run at its peak: its capacity",
    )
    parser.add_argument(
        "--redis-batch",
        action="store_true",
        help="run redis-server as a batch process (chrt -b 0): its wake-ups"
        " then wait for a worker's time slice instead of preempting it"
        ' (docs/scaling.md, "What the Redis server needs")',
    )
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="also measure job/status and GET /v1/job/{id} asked about any of"
        " the jobs at random (the stores' kept answers then mostly miss)",
    )
    parser.add_argument(
        "--baseline",
        help="a directory of the packages of the code to compare with, measured"
        " in the same rounds (e.g. symlinks into a checkout of another commit;"
        " both share one SQLite file, in this code's schema: a baseline from"
        " before schema 6 cannot open it, leave sqlite out of --stores)",
    )
    args = parser.parse_args()
    if args.workers_connections is None:
        args.workers_connections = [args.connections]
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    needed = set() if args.skip_floor else set(args.stores.split(","))
    needed |= set(filter(None, args.workers_stores.split(",")))
    with tempfile.TemporaryDirectory(prefix="jobstatus-http-") as tmp:
        jobs = plan_jobs(args.jobs, time.time())
        known = jobs[len(jobs) // 2][0]
        Path(tmp, "ids.txt").write_text("".join(job_id + "\n" for job_id, _, _ in jobs))
        args.spread = len(jobs) if args.spread else 0
        urls, processes, stops = open_stores(
            tmp,
            sorted(needed),
            jobs,  # type: ignore[arg-type]
            redis_batch=args.redis_batch,
        )
        try:
            if not args.skip_floor:
                floor_table(args, urls, known, tmp)
            if args.workers_stores:
                workers_table(args, urls, known, tmp, processes)
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(30)
            for stop in stops:
                stop()  # type: ignore[operator]


if __name__ == "__main__":
    main()
