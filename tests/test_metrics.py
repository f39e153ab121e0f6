"""The request metrics' bulk counting (``Metrics.done``, ``Metrics.count``):
the same figures as one ``observe`` and one ``inc`` a request, in both of
prometheus_client's value kinds, and none lost or counted twice; one set a
service, whichever adapters serve it; ours alone from a shared directory."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Histogram
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from jobstatus_adapters.metrics import Metrics, _observe_all
from jobstatus_adapters.starlette import create_app, status_routes
from jobstatus_backends import store_from_url

from .helpers import API_KEY, service_for

#: On the bounds, between them, below the first and past the last (+Inf).
AMOUNTS = [0.0, 0.005, 0.0051, 0.01, 0.3, 0.3, 2.5, 10.0, 11.0, 1e-7, 0.0749]

#: Run with PROMETHEUS_MULTIPROC_DIR set, so that prometheus_client writes
#: every value to a file (what ``jobstatus serve --workers N`` runs).
SAME_IN_FILES = """
import math
import sys
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from jobstatus_adapters.metrics import _observe_all

amounts = [float(a) for a in sys.argv[1:]]
one, bulk = Histogram("one", "."), Histogram("bulk", ".")
for amount in amounts:
    one.observe(amount)
half = len(amounts) // 2
_observe_all(bulk, amounts[:half])  # two turns: the second adds to the first
_observe_all(bulk, amounts[half:])
registry = CollectorRegistry()
MultiProcessCollector(registry)
samples = {
    (s.name, tuple(sorted(s.labels.items()))): s.value
    for family in registry.collect()
    for s in family.samples
}
for (name, labels), value in sorted(samples.items()):
    if name.startswith("one"):
        bulk = samples["bulk" + name[3:], labels]
        # One sum of a turn's amounts can round apart from adding each.
        same = math.isclose if name.endswith("_sum") else float.__eq__
        assert same(bulk, value), (name, labels, bulk, value)
print(len(samples))
"""


def samples(histogram: Histogram, registry: CollectorRegistry) -> dict[str, float]:
    """Every sample of ``histogram`` (named without its own name), but the
    moment it was made."""
    name = histogram._name
    return {
        s.name[len(name) :] + repr(sorted(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


def test_observing_all_at_once_reads_as_observing_each() -> None:
    registry = CollectorRegistry()
    one = Histogram("one", ".", registry=registry)
    bulk = Histogram("bulk", ".", registry=registry)
    for amount in AMOUNTS:
        one.observe(amount)
    half = len(AMOUNTS) // 2
    _observe_all(bulk, AMOUNTS[:half])  # two turns: the second adds to the first
    _observe_all(bulk, AMOUNTS[half:])
    each, at_once = samples(one, registry), samples(bulk, registry)
    # One sum of a turn's amounts can round apart from adding each.
    assert math.isclose(each.pop("_sum[]"), at_once.pop("_sum[]"))
    assert each == at_once
    assert at_once["_count[]"] == len(AMOUNTS)


def test_observing_all_at_once_reads_as_observing_each_in_files(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", SAME_IN_FILES, *map(str, AMOUNTS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # Both histograms' buckets, sums and counts were compared.
    assert int(done.stdout) == 2 * (len(Histogram.DEFAULT_BUCKETS) + 2)


def metrics() -> Metrics:
    return Metrics(service_for(store_from_url("memory://")))


def value(found: Metrics, name: str, **labels: str) -> float:
    return found.registry.get_sample_value(name, labels) or 0.0


def test_a_turns_answers_are_counted_when_it_ends_and_in_any_scrape() -> None:
    found = metrics()

    async def answer() -> None:
        started = found.start()
        for code in (200, 200, 404):
            found.done("get_job", code, started)
        # A scrape in the same turn sees them.
        assert (
            b'jobstatus_requests_total{code="200",operation="get_job"} 2.0'
            in (found.exposition()[1])
        )
        found.done("list_jobs", 200, started)
        found.done("list_jobs", 200, started)
        listed = {"operation": "list_jobs", "code": "200"}
        assert value(found, "jobstatus_requests_total", **listed) == 0
        await asyncio.sleep(0)  # the turn ends
        await asyncio.sleep(0)
        assert value(found, "jobstatus_requests_total", **listed) == 2

    asyncio.run(answer())
    requests = "jobstatus_requests_total"
    assert value(found, requests, operation="get_job", code="200") == 2
    assert value(found, requests, operation="get_job", code="404") == 1
    assert value(found, requests, operation="list_jobs", code="200") == 2
    count = "jobstatus_request_duration_seconds_count"
    assert value(found, count, operation="list_jobs") == 2
    assert value(found, count, operation="get_job") == 3


def test_no_answer_is_lost_or_counted_twice_under_scrapes_on_threads() -> None:
    found = metrics()
    turns, per_turn = 400, 25
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            found.flush()

    async def answer() -> None:
        started = found.start()
        for _ in range(turns):
            for _ in range(per_turn):
                found.done("get_job", 200, started)
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    scrapers = [threading.Thread(target=scrape) for _ in range(3)]
    # Threads switch at almost every bytecode, so drains interleave with
    # appends and with each other rather than by luck.
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    for each in scrapers:
        each.start()
    try:
        asyncio.run(answer())
    finally:
        stop.set()
        for each in scrapers:
            each.join()
        sys.setswitchinterval(switching)
    found.flush()
    total = value(found, "jobstatus_requests_total", operation="get_job", code="200")
    assert total == turns * per_turn
    seconds = "jobstatus_request_duration_seconds_count"
    assert value(found, seconds, operation="get_job") == turns * per_turn


def test_a_turn_on_a_new_loop_is_counted_though_an_old_loop_stopped() -> None:
    found = metrics()

    async def answer_and_stop() -> None:
        found.done("get_job", 200, found.start())
        # The loop ends before its turn does: the flush never runs.
        asyncio.get_running_loop().stop()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(answer_and_stop())
    except RuntimeError:
        pass  # "Event loop stopped before Future completed."
    finally:
        loop.close()

    async def answer() -> None:
        found.done("get_job", 200, found.start())
        await asyncio.sleep(0)

    asyncio.run(answer())
    requests = "jobstatus_requests_total"
    assert value(found, requests, operation="get_job", code="200") == 2


def test_adapters_over_one_service_count_into_one_set(
    serve: Callable[[ASGIApp], str],
) -> None:
    service = service_for(store_from_url("memory://"))
    alone = service_for(store_from_url("memory://"))
    host = Starlette(
        routes=[
            Mount("/alone", routes=status_routes(alone)),
            Mount("/r", routes=status_routes(service)),
            Mount("/a", app=create_app(service)),
            Mount("/b", app=create_app(service, dashboard=False)),
        ]
    )
    url = serve(host)
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        for _ in range(3):
            assert http.get("/a/v1/job/nope").status_code == 404
        assert http.get("/b/v1/job/nope").status_code == 404
        counted = 'jobstatus_requests_total{code="404",operation="get_job"} 4.0'
        for mount in ("/a", "/b", "/r"):
            scraped = http.get(mount + "/metrics")
            assert scraped.status_code == 200 and counted in scraped.text, mount
        # Routes alone count nothing: no /metrics, and their document
        # does not list it.
        assert http.get("/alone/metrics").status_code == 404
        listed = http.get("/alone/v1/openapi.json").json()["paths"]
        assert "/alone/metrics" not in listed and "/alone/healthz" in listed
        assert "/a/metrics" in http.get("/a/v1/openapi.json").json()["paths"]


#: A host with its own metrics in the shared directory, then ours.
HOST_BESIDE = """
from prometheus_client import Counter
from jobstatus_backends import store_from_url
from jobstatus_adapters.metrics import Metrics
from jobstatus import make_service

Counter("myapp_logins", "the host's own").inc()
service = make_service(store_from_url("memory://"), api_keys=["k" * 16])
metrics = Metrics.of(service)
metrics.count((("get_job", 404, 0.01),))
print(service.exposition()[1].decode())
"""


def test_a_shared_directory_shows_our_metrics_alone(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", HOST_BESIDE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert any(tmp_path.iterdir())  # both wrote to the files
    assert 'jobstatus_requests_total{code="404",operation="get_job"} 1.0' in done.stdout
    assert "myapp" not in done.stdout


def test_a_service_dropped_goes_with_its_metrics() -> None:
    """The set of metrics kept for a service holds it weakly: a host that
    builds and drops services (tests, reloads) does not keep their stores."""
    import gc
    import weakref

    from jobstatus_adapters.wsgi import WSGIApp

    gone = []
    for _ in range(3):
        service = service_for(store_from_url("memory://"))
        WSGIApp(service)
        create_app(service)
        assert service.exposition is not None
        gone.append(weakref.ref(service))
        del service
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]
