"""Kept pages of ``GET /v1/jobs`` (``jobstatus_core.pages.Pages``) are exact:
byte for byte the answer a fresh reading of the store gives, dropped on a
mark change, reused across a moving window only while every row read is
still in it, and at most ``MAX_AGE_SECONDS`` old."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobstatus_backends.memory import MemoryStore
from jobstatus_core import Mark, Query, Reply, Row, StatusService
from jobstatus_core.contract import OPERATIONS
from jobstatus_core.envelope import Host
from jobstatus_core.listing import MAX_AGE_SECONDS
from jobstatus_core.pages import Pages
from jobstatus_core.requests import Request
from jobstatus_core.tokens import EVERYTHING, Grant

from .helpers import Clock

pytestmark = pytest.mark.memory

LIST_JOBS = next(op for op in OPERATIONS if op.name == "list_jobs")


class CountingStore(MemoryStore):
    """A memory store that counts the pages it reads, and whose mark a test
    can hold still over a change (a change that bypassed the store)."""

    def __init__(self) -> None:
        super().__init__()
        self.pages = 0
        self.held: Mark | None = None

    def page(self, query: Query) -> list[Row]:
        self.pages += 1
        return super().page(query)

    def mark(self) -> Mark:
        return self.held if self.held is not None else super().mark()


def service_of(store: MemoryStore, clock: Clock) -> StatusService:
    # Fixed request ids and run times: two services' answers compare whole.
    return StatusService(
        store,
        auth=None,
        host=Host(pid=1, build_number="1"),
        clock=clock,
        timer=clock,
        new_id=lambda: "r",
        secret=b"s",
    )


def listing(
    service: StatusService,
    query: dict[str, list[str]],
    grant: Grant = EVERYTHING,
) -> bytes:
    request = Request(
        "/v1/jobs", "GET", {}, query=query, started=service.timer(), grant=grant
    )
    reply = service.handle(LIST_JOBS, request)
    assert isinstance(reply, Reply)
    return reply.body


def fresh(service: StatusService, query: dict[str, list[str]]) -> bytes:
    """The answer read from the store, nothing kept."""
    service.pages = Pages(timer=service.timer)
    return listing(service, query)


statuses = st.sampled_from(["queued", "running", "done", {"progress": 1}])
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"), st.sampled_from("abcdef"), statuses, st.integers(0, 16)
        ),
        st.tuples(st.just("tick"), st.integers(0, 4)),
        st.tuples(
            st.just("list"),
            st.lists(st.sampled_from(["queued", "done", "running"]), max_size=2),
            st.one_of(st.none(), st.integers(0, 3)),
            st.integers(1, 3),
            st.booleans(),
            st.booleans(),
            st.integers(0, 3),
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_kept_pages_are_byte_for_byte_a_fresh_reading(script: list[Any]) -> None:
    clock = Clock(100.0)
    store = MemoryStore()
    kept, reference = service_of(store, clock), service_of(store, clock)
    for step in script:
        if step[0] == "put":
            _, job_id, status, age = step
            # Quarter seconds: rows leave a window while a page is kept.
            store.put({"job_id": job_id, "job_status": status}, at=clock.now - age / 4)
        elif step[0] == "tick":
            clock.now += step[1] * 0.3  # some within MAX_AGE_SECONDS, some not
        else:
            _, wanted, since, limit, counts, records, pages = step
            query: dict[str, list[str]] = {"limit": [str(limit)]}
            if wanted:
                query["status"] = [",".join(wanted)]
            if since is not None:
                query["since_seconds"] = [str(since)]
            if counts:
                query["counts"] = ["true"]
            if records:
                query["include"] = ["record"]
            # The first page and those after it, each asked again a moment
            # later, when a row may have left the window.
            for _ in range(pages + 1):
                for moment in (0.0, 0.25):
                    clock.now += moment
                    body = listing(kept, query)
                    assert body == fresh(reference, query)
                answer = json.loads(body)["response"]
                if not answer["has_more"]:
                    break
                query["cursor"] = [answer["cursor"]]


def test_a_page_is_kept_while_the_mark_is_unchanged() -> None:
    clock = Clock(100.0)
    store = CountingStore()
    store.put({"job_id": "a", "job_status": "done"}, at=90.0)
    service = service_of(store, clock)
    first = listing(service, {})
    assert listing(service, {}) == first
    assert store.pages == 1
    store.put({"job_id": "b", "job_status": "queued"}, at=95.0)  # the mark moves
    second = listing(service, {})
    assert second != first and b'"b"' in second
    assert store.pages == 2


def test_each_query_keeps_its_own_page() -> None:
    store = CountingStore()
    store.put({"job_id": "a", "job_status": "done"}, at=90.0)
    store.put({"job_id": "b", "job_status": "queued"}, at=91.0)
    service = service_of(store, Clock(100.0))
    queries: list[dict[str, list[str]]] = [
        {},
        {"limit": ["1"]},
        {"status": ["done"]},
        {"counts": ["true"]},
        {"include": ["record"]},
    ]
    answers = [listing(service, query) for query in queries]
    assert len(set(answers)) == len(queries)
    assert [listing(service, query) for query in queries] == answers
    assert store.pages == len(queries)


def test_a_windowed_page_is_kept_while_its_rows_are_in_the_window() -> None:
    clock = Clock(100.0)
    store = CountingStore()
    store.put({"job_id": "a", "job_status": "done"}, at=90.5)
    service = service_of(store, clock)
    query = {"since_seconds": ["10"]}  # cutoff 90: a is in
    first = listing(service, query)
    clock.now = 100.5  # cutoff 90.5: a, written at 90.5, still in
    assert listing(service, query) == first
    assert store.pages == 1
    clock.now = 100.75  # a has left the window: read again
    assert b'"a"' not in listing(service, query)
    assert store.pages == 2


def test_counts_over_a_window_are_not_kept() -> None:
    clock = Clock(100.0)
    store = CountingStore()
    store.put({"job_id": "a", "job_status": "done"}, at=95.0)
    service = service_of(store, clock)
    query = {"since_seconds": ["10"], "counts": ["true"]}
    assert listing(service, query) == listing(service, query)
    assert store.pages == 2


def test_a_page_is_reused_for_at_most_max_age() -> None:
    clock = Clock(100.0)
    store = CountingStore()
    store.put({"job_id": "a", "job_status": "done"}, at=90.0)
    service = service_of(store, clock)
    store.held = store.mark()
    first = listing(service, {})
    store.put({"job_id": "b", "job_status": "done"}, at=91.0)  # the mark held
    clock.now = 100.0 + MAX_AGE_SECONDS
    assert listing(service, {}) == first
    clock.now = 100.001 + MAX_AGE_SECONDS
    assert b'"b"' in listing(service, {})
    assert store.pages == 2


def test_a_tokens_page_is_not_kept() -> None:
    store = CountingStore()
    store.put({"job_id": "a", "job_status": "done"}, at=90.0)
    service = service_of(store, Clock(100.0))
    grant = Grant(frozenset({"a"}))
    first = listing(service, {}, grant)
    assert b'"a"' in first
    store.put({"job_id": "a", "job_status": "failed"}, at=91.0)
    assert b'"failed"' in listing(service, {}, grant)
    assert store.pages == 0  # read by id, never paged


def test_a_token_is_never_answered_the_page_kept_for_the_api_key() -> None:
    """Nothing written between: the API key's page is kept, and the same
    query with a token still reads the token's jobs alone."""
    store = CountingStore()
    for n, (job_id, status) in enumerate(
        [("a", "done"), ("b", "failed"), ("c", "queued")]
    ):
        store.put({"job_id": job_id, "job_status": status}, at=90.0 + n)
    service = service_of(store, Clock(100.0))
    query = {"counts": ["true"]}
    whole = json.loads(listing(service, query))["response"]
    assert [job["job_id"] for job in whole["jobs"]] == ["a", "b", "c"]
    assert json.loads(listing(service, query))["response"] == whole  # kept
    scoped = json.loads(listing(service, query, Grant(frozenset({"a", "c"}))))
    assert [job["job_id"] for job in scoped["response"]["jobs"]] == ["a", "c"]
    assert scoped["response"]["counts"] == {"done": 1, "queued": 1}


class RowsStore(MemoryStore):
    """A memory store whose pages are the rows a test gives: values no write
    through ``put`` makes (non-finite or whole-number times, statuses as
    other writers encode them)."""

    def __init__(self, rows: list[Row]) -> None:
        super().__init__()
        self.rows = rows

    def page(self, query: Query) -> list[Row]:
        return self.rows[: query.limit]


texts = st.text(max_size=8)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
    ),
    max_leaves=6,
)
rows = st.lists(
    st.builds(
        Row,
        job_id=st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
        status=st.none() | values.map(lambda v: json.dumps(v, ensure_ascii=False)),
        updated_at=st.floats() | st.integers(-(2**60), 2**60),
        version=texts,
        position=st.integers(1, 10**9),
        record=st.none() | st.dictionaries(texts, values, max_size=3),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(rows, st.booleans())
def test_a_page_is_written_as_encoding_it_whole_would(
    given_rows: list[Row], records: bool
) -> None:
    store = RowsStore(given_rows)
    service = service_of(store, Clock(100.0))
    query = {"limit": ["1000"]}
    if records:
        query["include"] = ["record"]
    body = listing(service, query)
    token = json.loads(body)["response"]["cursor"]
    items = []
    for row in given_rows:
        item: dict[str, Any] = {
            "job_id": row.job_id,
            "job_status": None if row.status is None else json.loads(row.status),
            "updated_at": row.updated_at,
            "version": row.version,
        }
        if records:
            item["record"] = row.record
        items.append(item)
    response = {"jobs": items, "cursor": token, "has_more": False}
    expected = service_of(store, Clock(100.0)).success(
        Request("/v1/jobs", "GET", {}, started=100.0), response
    )
    assert body == expected.body
