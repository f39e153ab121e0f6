"""Prometheus metrics of one service, for ``GET /metrics`` (SPEC §15).

Requests are counted by operation (the contract table's name, never a raw
path: a label per job id would grow without end) and status code, around
either adapter. Under ``jobstatus serve --workers N`` every worker writes its
counts to ``PROMETHEUS_MULTIPROC_DIR`` (a temporary directory per ``serve``)
and a scrape of any worker sums them all; jobs by status come from the
store's kept counts, which every worker shares.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
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
#: The label of a request no operation matched (our own 404 and 405).
UNMATCHED = "none"


class Metrics:
    """The metrics of one service; installs its ``/metrics`` exposition."""

    def __init__(self, service: StatusService) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        shared = bool(os.environ.get(MULTIPROC_ENV))
        # Under several workers each metric writes to the shared directory
        # and the collector reads every worker's file.
        own: CollectorRegistry | None = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
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
        self.registry.register(_JobCounts(service, self))
        service.store_error_hooks.append(self.count_store_error)
        service.exposition = self.exposition

    def count_store_error(self, exc: Exception) -> None:
        kind = "unavailable" if isinstance(exc, StoreUnavailable) else "failed"
        self.store_errors.labels(kind).inc()

    def exposition(self) -> tuple[str, bytes]:
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def start(self) -> float:
        """The moment a request's latency counts from (``done``)."""
        return time.perf_counter()

    def done(self, operation: str, code: int, started: float) -> None:
        latency = self._latency.get(operation)
        if latency is None:
            latency = self._latency[operation] = self.latency.labels(operation)
        latency.observe(time.perf_counter() - started)
        counter = self._by_answer.get((operation, code))
        if counter is None:
            counter = self._by_answer[operation, code] = self.requests.labels(
                operation, str(code)
            )
        counter.inc()

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


class _JobCounts(Collector):
    """``jobstatus_jobs{status}``: the store's kept counts, read per scrape."""

    def __init__(self, service: StatusService, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "jobstatus_jobs", "Jobs in the store, by status", labels=("status",)
        )
        try:
            counts = self.service.store.counts(None, None)
        except WouldBlock:
            raise  # tried again on a thread: not a failure
        except Exception as exc:
            self.metrics.count_store_error(exc)
            counts = {}
        for text, n in sorted(counts.items()):
            value = json.loads(text)
            family.add_metric((value if isinstance(value, str) else text,), n)
        yield family
        store = self.service.store
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
            self.metrics.done(name, code, started)
