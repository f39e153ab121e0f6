"""Prometheus metrics of one service, for ``GET /metrics`` (SPEC §15).

Requests are counted by operation (the contract table's name, never a raw
path: a label per job id would grow without end) and status code, around
either adapter: on an event loop once the loop's turn that answered them
ends, all of the turn's answers at once (``Metrics.done``). Under
``jobstatus serve --workers N`` every worker writes its counts to
``PROMETHEUS_MULTIPROC_DIR`` (a temporary directory per ``serve``) and a
scrape of any worker sums them all; jobs by status come from the store's
kept counts, which every worker shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from jobstatus_core import StatusService, StoreUnavailable, WouldBlock
from jobstatus_core.contract import Match, Router
from jobstatus_core.protocol import Indexed

from .routing import origin_path

if TYPE_CHECKING:
    from .wsgi import Environ, StartResponse, WSGIApplication

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The metrics' names all start so: in a shared directory a host's own
#: metrics are beside ours, and a scrape of ours shows ours alone.
OWN_PREFIX = "jobstatus_"
#: The label of a request no operation matched (our own 404 and 405).
UNMATCHED = "none"
#: One request answered: its operation, status code and seconds to answer.
Answer = tuple[str, int, float]


class Metrics:
    """The metrics of one service; installs its ``/metrics`` exposition.
    Made by ``Metrics.of``: one a service, whichever adapters serve it."""

    @classmethod
    def of(cls, service: StatusService) -> Metrics:
        """``service``'s metrics, made with its first adapter: two adapters
        over one service (an app mounted twice, ASGI beside WSGI) count
        into one set, where each would have replaced the other's
        exposition and counted a store failure twice."""
        with _MADE:
            metrics = _BY_SERVICE.get(service)
            if metrics is None:
                metrics = _BY_SERVICE[service] = cls(service)
            return metrics

    def __init__(self, service: StatusService) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        shared = bool(os.environ.get(MULTIPROC_ENV))
        # Under several workers each metric writes to the shared directory
        # and the collector reads every worker's file.
        own: CollectorRegistry | None = None if shared else self.registry
        if shared:
            self.registry.register(_OwnFiles())
        self.requests = Counter(
            "jobstatus_requests",
            "Requests answered, by operation and status code",
            ("operation", "code"),
            registry=own,
        )
        self.latency = Histogram(
            "jobstatus_request_duration_seconds",
            "Time to answer, by operation (a wait's time included)",
            ("operation",),
            registry=own,
        )
        self.in_progress = Gauge(
            "jobstatus_requests_in_progress",
            "Requests waiting for a change or streaming events, by operation:"
            " the open waiters and the open streams",
            ("operation",),
            registry=own,
            multiprocess_mode="livesum",
        )
        self.store_errors = Counter(
            "jobstatus_store_errors",
            "Store calls that failed: unavailable (503) or failed (500)",
            ("kind",),
            registry=own,
        )
        # Each request's children, kept: ``labels()`` builds its key and
        # takes a lock. All are bounded (operations, and the status codes of
        # the contract).
        self._latency: dict[str, Histogram] = {}
        self._by_answer: dict[tuple[str, int], Counter] = {}
        self._open: dict[str, Gauge] = {}
        # Answers on an event loop wait here for the end of the loop's turn
        # (``done``). A deque: each append and each popleft is atomic, so a
        # scrape on any thread can drain it too, and no answer is counted
        # twice or lost.
        self._pending: deque[Answer] = deque()
        #: The thread and loop a flush is scheduled on, until it runs.
        self._flush_on: tuple[int, asyncio.AbstractEventLoop] | None = None
        self.registry.register(_JobCounts(service, self))
        service.store_error_hooks.append(self.count_store_error)
        service.exposition = self.exposition

    def count_store_error(self, exc: Exception) -> None:
        kind = "unavailable" if isinstance(exc, StoreUnavailable) else "failed"
        self.store_errors.labels(kind).inc()

    def exposition(self) -> tuple[str, bytes]:
        # Every answer given before the scrape is in it, the turn's too.
        self.flush()
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def start(self) -> float:
        """The moment a request's latency counts from (``done``)."""
        return time.perf_counter()

    def done(self, operation: str, code: int, started: float) -> None:
        """A request answered on the running event loop, counted with the
        others its turn answered once the turn ends: one update a bucket and
        a code for all of them, where each request on its own cost three
        locked ones (written to a file under several workers). With no
        asyncio loop (trio run on its own), counted at once."""
        answer = (operation, code, time.perf_counter() - started)
        flush_on = self._flush_on
        # The loop the flush waits on runs here, so it will run. Asked
        # without get_running_loop(): on Python 3.11 a getpid() system call.
        if (
            flush_on is None
            or flush_on[0] != threading.get_ident()
            or not flush_on[1].is_running()
        ):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # trio: no loop's turn to wait for
                self.count((answer,))
                return
            self._flush_on = threading.get_ident(), loop
            loop.call_soon(self.flush)
        self._pending.append(answer)

    def flush(self) -> None:
        """Counts the answers ``done`` holds."""
        self._flush_on = None
        pending = self._pending
        answers: list[Answer] = []
        while pending:
            try:
                answers.append(pending.popleft())
            except IndexError:  # another thread drained the last one
                break
        self.count(answers)

    def count(self, answers: Iterable[Answer]) -> None:
        """Counts answers now: a turn's (``flush``), or one (a WSGI app's,
        on its threads; trio's)."""
        by_answer: defaultdict[tuple[str, int], int] = defaultdict(int)
        took: defaultdict[str, list[float]] = defaultdict(list)
        for operation, code, seconds in answers:
            by_answer[operation, code] += 1
            took[operation].append(seconds)
        for key, n in by_answer.items():
            counter = self._by_answer.get(key)
            if counter is None:
                counter = self._by_answer[key] = self.requests.labels(
                    key[0], str(key[1])
                )
            counter.inc(n)
        for operation, amounts in took.items():
            latency = self._latency.get(operation)
            if latency is None:
                latency = self._latency[operation] = self.latency.labels(operation)
            _observe_all(latency, amounts)

    @contextlib.contextmanager
    def open(self, operation: str) -> Iterator[None]:
        """A wait or an event stream of ``operation``, counted in progress
        while it lasts. Only these: a request answered at once is over
        before any scrape could see it, and counting each one cost two
        locked updates a request (four with several workers' files)."""
        gauge = self._open.get(operation)
        if gauge is None:
            gauge = self._open[operation] = self.in_progress.labels(operation)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()


#: Each service's metrics (``Metrics.of``). Weak: a service dropped goes
#: with its store, so nothing its metrics hold refers back to it strongly
#: (``_JobCounts``); its hooks and exposition refer to them.
_BY_SERVICE: weakref.WeakKeyDictionary[StatusService, Metrics] = (
    weakref.WeakKeyDictionary()
)
#: Adapters built on several threads at once make one set a service.
_MADE = threading.Lock()


def _observe_all(histogram: Histogram, amounts: list[float]) -> None:
    """``histogram.observe`` of each amount (a duration: never NaN), in one
    update of its sum and one of each bucket hit. The client has no such
    call, so this writes the child's values as ``observe`` does (its bucket:
    the first bound at or above the amount; the sum, one addition of the
    amounts' sum, can differ in its last bits). ``tests/test_metrics.py``
    holds the two to the same samples, so a client whose insides change
    fails there, not in production."""
    bounds = histogram._upper_bounds
    hits: defaultdict[int, int] = defaultdict(int)
    for amount in amounts:
        hits[bisect_left(bounds, amount)] += 1
    histogram._sum.inc(sum(amounts))
    buckets = histogram._buckets
    for bucket, n in hits.items():
        buckets[bucket].inc(n)


class _OwnFiles(Collector):
    """Every process's counts from the shared directory, ours alone: a host
    that set ``PROMETHEUS_MULTIPROC_DIR`` for its own metrics writes them
    there too."""

    def __init__(self) -> None:
        self._all = MultiProcessCollector(None)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        for family in self._all.collect():  # type: ignore[no-untyped-call]
            if family.name.startswith(OWN_PREFIX):
                yield family

    def describe(self) -> Iterable[Metric]:
        return ()


class _JobCounts(Collector):
    """``jobstatus_jobs{status}``: the store's kept counts, read per scrape."""

    def __init__(self, service: StatusService, metrics: Metrics) -> None:
        # Weak: the metrics are kept by the service's key in _BY_SERVICE.
        self.service = weakref.ref(service)
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        service = self.service()
        if service is None:
            return  # scraped as its service went: nothing to count
        family = GaugeMetricFamily(
            "jobstatus_jobs", "Jobs in the store, by status", labels=("status",)
        )
        up = 1
        try:
            counts = service.store.counts(None, None)
        except WouldBlock:
            raise  # tried again on a thread: not a failure
        except Exception as exc:
            self.metrics.count_store_error(exc)
            counts, up = {}, 0
        for text, n in sorted(counts.items()):
            value = json.loads(text)
            family.add_metric((value if isinstance(value, str) else text,), n)
        yield family
        # The exporters' `up`: while the store fails, jobstatus_jobs has no
        # series, and an alert on it alone would go quiet instead of firing.
        yield GaugeMetricFamily(
            "jobstatus_store_up",
            "1 when this scrape read the store's counts, 0 when the store failed",
            value=up,
        )
        store = service.store
        if isinstance(store, Indexed):
            yield GaugeMetricFamily(
                "jobstatus_index_jobs",
                "Jobs held by the store's in-process index (the file store)",
                value=store.indexed(),
            )

    def describe(self) -> Iterable[Metric]:
        # Describing must not call the store (it runs at registration).
        return ()


def operation_of(router: Router, method: str, path: str) -> str | None:
    """The operation name a request is counted under; None: not ours."""
    found = router.match(method, path)
    if found is None:
        return None
    return found.operation.name if isinstance(found, Match) else UNMATCHED


class WSGIMetrics:
    """Counts the requests the WSGI app answers itself (not its fallback's)."""

    def __init__(self, app: WSGIApplication, metrics: Metrics, router: Router) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    def __call__(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        path = origin_path(environ.get("PATH_INFO", "") or "/") or ""
        method = environ.get("REQUEST_METHOD", "")
        name = operation_of(self.router, method, path) or UNMATCHED
        code = 500
        started = self.metrics.start()

        def counted(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            nonlocal code
            code = int(status.split(" ", 1)[0])
            return start_response(status, headers, *rest)

        try:
            return self.app(environ, counted)
        finally:
            took = time.perf_counter() - started
            self.metrics.count(((name, code, took),))
