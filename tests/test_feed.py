"""The change feed (SPEC §11) on every store, over a real uvicorn server."""

from __future__ import annotations

import json
import logging
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from jobstatus_adapters import starlette as starlette_adapter
from jobstatus_adapters.changes import changes_for
from jobstatus_adapters.starlette import create_app
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends import store_from_url
from jobstatus_core import Store, StoreUnavailable
from jobstatus_core.cursor import Cursor
from jobstatus_core.interest import Interest
from jobstatus_core.rows import Mark, Query, Row
from jobstatus_core.wrapping import StoreWrapper, wrap

from .helpers import API_KEY, Clock, answers, service_for, start_redis, wait_for
from .test_http_contract import assert_error
from .test_waiting import ReadCounting

NOW = Clock().now
Event = dict[str, Any]


@contextmanager
def stream(
    url: str,
    path: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[queue.Queue[Event | None]]:
    """Events of a stream as they arrive (None when it ends), read by a thread
    over a raw socket, so that leaving the block hangs up at once (as a
    browser tab closing would)."""
    events: queue.Queue[Event | None] = queue.Queue()
    stop = threading.Event()
    target = httpx.URL(url + path, params=params or {})
    sent = {"x-api-key": API_KEY} if headers is None else headers
    sock = socket.create_connection((target.host, target.port or 80), timeout=10)
    lines = "".join(f"{name}: {value}\r\n" for name, value in sent.items())
    query = f"?{target.query.decode()}" if target.query else ""
    request = f"GET {target.path}{query} HTTP/1.1\r\nHost: {target.host}\r\n"
    sock.sendall(f"{request}{lines}\r\n".encode())
    sock.settimeout(0.2)

    def read() -> None:
        raw = b""
        try:
            head = _until(sock, stop, b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                body = _until(sock, stop, b"}")  # a JSON envelope, whole
                events.put({"status": status, "body": body})
                return
            event: Event = {}
            while not stop.is_set():
                size_line = _until(sock, stop, b"\r\n")
                size = int(size_line.strip() or b"0", 16)
                if size == 0:
                    return
                raw += _exactly(sock, stop, size + 2)[:-2]
                *complete, raw = raw.split(b"\n")
                for line in (part.decode().rstrip("\r") for part in complete):
                    if not line:
                        if event:
                            events.put(event)
                        event = {}
                    elif not line.startswith(":"):
                        field, _, value = line.partition(":")
                        event[field] = value.removeprefix(" ")
        except (OSError, ValueError, _Stopped):
            pass
        finally:
            events.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield events
    finally:
        stop.set()
        reader.join(5)
        sock.close()


class _Stopped(Exception):
    pass


def _until(sock: socket.socket, stop: threading.Event, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        data += _exactly(sock, stop, 1)
    return data


def _exactly(sock: socket.socket, stop: threading.Event, size: int) -> bytes:
    data = b""
    while len(data) < size:
        if stop.is_set():
            raise _Stopped
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            continue
        if not chunk:
            raise _Stopped
        data += chunk
    return data


def next_job(events: queue.Queue[Event | None], timeout: float = 5) -> Event:
    while True:
        event = events.get(timeout=timeout)
        assert event is not None, "the stream ended"
        if event.get("event") == "job":
            return {**event, "data": json.loads(event["data"])}


def put(store: Store, job_id: str, status: str, at: float = NOW) -> None:
    store.put({"job_id": job_id, "job_status": status, "response": None}, at=at)


@pytest.fixture
def feed_url(store: Store, serve: Callable[[ASGIApp], str]) -> str:
    clock = Clock(NOW)
    return serve(create_app(service_for(store, clock)))


def test_snapshot_then_every_change_then_resume(feed_url: str, store: Store) -> None:
    put(store, "a", "running", NOW - 10)
    put(store, "old", "done", NOW - 10_000)  # outside the 600 s window
    put(store, "b", "queued", NOW - 5)
    with stream(feed_url, "/v1/jobs/events") as events:
        first, second = next_job(events), next_job(events)
        assert [first["data"]["job_id"], second["data"]["job_id"]] == ["a", "b"]
        assert first["retry"] == "2000"
        put(store, "a", "done")
        put(store, "c", "queued")
        third, fourth = next_job(events), next_job(events)
        assert (third["data"]["job_id"], third["data"]["job_status"]) == ("a", "done")
        assert fourth["data"]["job_id"] == "c"
        assert set(fourth["data"]) == {"job_id", "job_status", "updated_at", "version"}
    # Resuming after the second event gives every later change, once each.
    headers = {"x-api-key": API_KEY, "last-event-id": second["id"]}
    with stream(feed_url, "/v1/jobs/events", headers=headers) as events:
        resumed = [next_job(events)["data"]["job_id"] for _ in range(2)]
        assert resumed == ["a", "c"]
    with stream(feed_url, "/v1/jobs/events", params={"cursor": fourth["id"]}) as events:
        put(store, "d", "queued")
        assert next_job(events)["data"]["job_id"] == "d"


def test_a_stream_lost_before_its_first_event_resumes_where_it_began(
    feed_url: str, store: Store
) -> None:
    """An empty window still gives the stream an id: a change made while the
    client is away is sent when it comes back, not lost to a new window."""
    put(store, "old", "done", NOW - 100)
    with stream(feed_url, "/v1/jobs/events", params={"since_seconds": 0}) as events:
        ready = events.get(timeout=5)
    assert ready is not None and "event" not in ready and ready["retry"] == "2000"
    put(store, "meanwhile", "queued")
    headers = {"x-api-key": API_KEY, "last-event-id": ready["id"]}
    with stream(feed_url, "/v1/jobs/events", headers=headers) as events:
        assert next_job(events)["data"]["job_id"] == "meanwhile"


def test_filters_by_status_and_job(feed_url: str, store: Store) -> None:
    put(store, "a", "done")
    put(store, "b", "failed")
    put(store, "c", "done")
    with stream(feed_url, "/v1/jobs/events", params={"status": "failed"}) as events:
        assert next_job(events)["data"]["job_id"] == "b"
        put(store, "a", "failed")
        assert next_job(events)["data"]["job_id"] == "a"
    with stream(feed_url, "/v1/jobs/events", params={"job_id": ["c", "zz"]}) as events:
        assert next_job(events)["data"]["job_id"] == "c"
        put(store, "b", "done")
        put(store, "zz", "queued")
        assert next_job(events)["data"]["job_id"] == "zz"


def test_a_job_stream_ends_after_a_terminal_status(feed_url: str, store: Store) -> None:
    put(store, "j", "running", NOW - 100_000)  # any age: it is the job's state
    with stream(feed_url, "/v1/job/j/events") as events:
        assert next_job(events)["data"]["job_status"] == "running"
        put(store, "other", "done")
        put(store, "j", "done")
        assert next_job(events)["data"]["job_status"] == "done"
        assert events.get(timeout=5) is None
    with stream(feed_url, "/v1/job/later/events") as events:
        put(store, "later", "failed")
        assert next_job(events)["data"]["job_status"] == "failed"
        assert events.get(timeout=5) is None


def test_a_job_stream_resumed_after_its_end_is_204(feed_url: str, store: Store) -> None:
    """What every EventSource does once a stream ends: it reconnects with
    the last event's id. Answered 204 (it stops reconnecting), not an empty
    stream that holds a slot open."""
    put(store, "j", "running")
    with stream(feed_url, "/v1/job/j/events") as events:
        assert next_job(events)["data"]["job_status"] == "running"
        put(store, "j", "done")
        done = next_job(events)
        assert done["data"]["job_status"] == "done"
        assert events.get(timeout=5) is None
    headers = {"x-api-key": API_KEY}
    ended = httpx.get(
        feed_url + "/v1/job/j/events",
        headers={**headers, "last-event-id": done["id"]},
        timeout=5,
    )
    assert ended.status_code == 204 and ended.content == b""
    assert "content-length" not in ended.headers
    document = httpx.get(feed_url + "/v1/openapi.json", headers=headers).json()
    described = document["paths"]["/v1/job/{job_id}/events"]["get"]["responses"]
    assert "content" not in described["204"]  # as answered: no body
    # Queued again after the point: followed as any change.
    put(store, "j", "queued")
    with stream(
        feed_url, "/v1/job/j/events", headers={**headers, "last-event-id": done["id"]}
    ) as events:
        assert next_job(events)["data"]["job_status"] == "queued"
        put(store, "j", "failed")
        assert next_job(events)["data"]["job_status"] == "failed"
        assert events.get(timeout=5) is None


@pytest.mark.parametrize(
    "path, params, code, message",
    [
        (
            "/v1/jobs/events",
            {"since_seconds": "-1"},
            400,
            "Invalid parameter: since_seconds",
        ),
        ("/v1/jobs/events", {"job_id": "../x"}, 400, "Invalid parameter: job_id"),
        ("/v1/jobs/events", {"cursor": "x.y"}, 400, "Invalid cursor"),
        ("/v1/job/.x/events", {}, 400, "Invalid parameter: job_id"),
    ],
)
def test_bad_feed_requests(
    feed_url: str, path: str, params: dict[str, str], code: int, message: str
) -> None:
    response = httpx.get(feed_url + path, params=params, headers={"x-api-key": API_KEY})
    assert_error(response, code, message)


def test_a_token_narrows_the_feed(feed_url: str, store: Store) -> None:
    put(store, "mine", "running")
    put(store, "theirs", "running")
    granted = httpx.post(
        feed_url + "/v1/tokens",
        json={"job_ids": ["mine"]},
        headers={"x-api-key": API_KEY},
    ).json()["response"]["token"]
    with stream(
        feed_url, "/v1/jobs/events", params={"token": granted}, headers={}
    ) as events:
        assert next_job(events)["data"]["job_id"] == "mine"
        put(store, "theirs", "done")
        put(store, "mine", "done")
        assert next_job(events)["data"]["job_id"] == "mine"
    refused = httpx.get(feed_url + "/v1/job/theirs/events", params={"token": granted})
    assert_error(refused, 403, "Forbidden")
    # Naming a job the token does not grant is refused, as everywhere else.
    for named in (["theirs"], ["mine", "theirs"]):
        asked = {"token": granted, "job_id": named}
        refused = httpx.get(feed_url + "/v1/jobs/events", params=asked)
        assert_error(refused, 403, "Forbidden")
    with stream(
        feed_url,
        "/v1/jobs/events",
        params={"token": granted, "job_id": "mine"},
        headers={},
    ) as events:
        assert next_job(events)["data"]["job_id"] == "mine"


@pytest.mark.memory
def test_streams_are_bounded_and_freed(serve: Callable[[ASGIApp], str]) -> None:
    store = store_from_url("memory://")
    url = serve(create_app(service_for(store, max_streams=1)))
    with stream(url, "/v1/jobs/events") as events:
        # Now, not at the test clock's time: this service reads the real
        # clock, and the job must be in the snapshot's window or after it.
        put(store, "a", "queued", time.time())
        assert next_job(events)["data"]["job_id"] == "a"
        refused = httpx.get(url + "/v1/jobs/events", headers={"x-api-key": API_KEY})
        assert_error(refused, 503, "Too many open streams")
        assert refused.headers["retry-after"] == "1"
    # The client went away: its place is free again (once the server has
    # seen it go).
    deadline = time.monotonic() + 5
    while True:
        with stream(url, "/v1/jobs/events") as events:
            put(store, "b", "queued", time.time())
            event = events.get(timeout=5)
            if event is not None and "status" not in event:
                break
        assert time.monotonic() < deadline, "the place stayed taken"
        time.sleep(0.2)


@pytest.mark.memory
def test_wsgi_answers_501_for_streams(serve_wsgi: Callable[[Any], str]) -> None:
    url = serve_wsgi(WSGIApp(service_for(store_from_url("memory://"))))
    for path in ("/v1/jobs/events", "/v1/job/a/events"):
        response = httpx.get(url + path, headers={"x-api-key": API_KEY})
        assert_error(
            response, 501, "Not implemented: event streams need the ASGI adapter"
        )
        assert_error(httpx.get(url + path), 401, "Unauthorized")


@pytest.mark.memory
def test_a_stream_ends_after_its_time_and_resumes_where_it_ended(
    serve: Callable[[ASGIApp], str],
) -> None:
    store = store_from_url("memory://")
    url = serve(create_app(service_for(store, stream_seconds=0.5)))
    put(store, "a", "queued", time.time())
    with stream(url, "/v1/jobs/events") as events:
        first = next_job(events)
        assert events.get(timeout=5) is None  # closed by the server
    put(store, "b", "queued", time.time())
    headers = {"x-api-key": API_KEY, "last-event-id": first["id"]}
    with stream(url, "/v1/jobs/events", headers=headers) as events:
        assert next_job(events)["data"]["job_id"] == "b"


def test_a_change_wakes_only_the_stream_of_its_job(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    """100 per-job streams; one job finishes: its stream alone wakes, and the
    wake-up costs a few store reads, not one per stream."""
    counting = wrap(store, ReadCounting)
    service = service_for(counting, Clock(NOW))  # type: ignore[arg-type]
    url = serve(create_app(service))
    hub = changes_for(service)
    ids = [f"s{i}" for i in range(100)]
    for job_id in ids:
        put(counting, job_id, "running")
    with ExitStack() as streams:
        followed = {
            job_id: streams.enter_context(stream(url, f"/v1/job/{job_id}/events"))
            for job_id in ids
        }
        for events in followed.values():
            assert next_job(events, 20)["data"]["job_status"] == "running"
        wait_for(lambda: hub.subscribed == 100, 20)
        before = counting.calls.copy()
        put(counting, "s7", "done")
        assert next_job(followed["s7"])["data"]["job_status"] == "done"
        # The others stay asleep: everything the change woke has happened.
        wait_for(lambda: hub.subscribed == 99, 5)
        time.sleep(0.5)
        spent = counting.calls - before
        assert hub.subscribed == 99
        assert all(followed[j].empty() for j in ids if j != "s7")
        # The hub's look at what changed (a page, twice if the mark moved
        # while it looked); the stream sends what that look read.
        assert spent["read"] + spent["read_many"] == 0, spent
        assert spent["page"] <= 2, spent


def test_a_change_to_a_job_many_follow_costs_one_look(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    """100 streams of one job; it changes once: every stream sends it, from
    the rows the hub's look read — not one store read per stream."""
    counting = wrap(store, ReadCounting)
    service = service_for(counting, Clock(NOW))  # type: ignore[arg-type]
    url = serve(create_app(service))
    hub = changes_for(service)
    put(counting, "shared", "running")
    with ExitStack() as streams:
        followers = [
            streams.enter_context(stream(url, "/v1/job/shared/events"))
            for _ in range(100)
        ]
        for events in followers:
            assert next_job(events, 20)["data"]["job_status"] == "running"
        wait_for(lambda: hub.subscribed == 100, 20)
        before = counting.calls.copy()
        put(counting, "shared", "done")
        sent = [next_job(events)["data"] for events in followers]
        assert {data["job_status"] for data in sent} == {"done"}
        spent = counting.calls - before
        assert spent["read"] + spent["read_many"] == 0, spent
        assert spent["page"] <= 2, spent


def test_a_change_many_streams_follow_is_encoded_once(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    """100 streams of one job; it changes once: every stream gets the same
    event, id and data alike, and the server made it once — its cursor was
    signed once, not once per stream."""
    service = service_for(store, Clock(NOW))
    signed: list[int] = []
    sign = service.encode_cursor

    def counted(position: Cursor, digest: str) -> str:
        signed.append(position.position)
        return sign(position, digest)

    service.encode_cursor = counted  # type: ignore[method-assign]
    url = serve(create_app(service))
    hub = changes_for(service)
    put(store, "shared", "running")
    with ExitStack() as streams:
        followers = [
            streams.enter_context(stream(url, "/v1/job/shared/events"))
            for _ in range(100)
        ]
        for events in followers:
            assert next_job(events, 20)["data"]["job_status"] == "running"
        wait_for(lambda: hub.subscribed == 100, 20)
        signed.clear()
        put(store, "shared", "done")
        sent = [_next_raw_job(events) for events in followers]
    assert len({(event["id"], event["data"]) for event in sent}) == 1
    assert json.loads(sent[0]["data"])["job_status"] == "done"
    assert len(signed) == 1, signed


def _next_raw_job(events: queue.Queue[Event | None]) -> Event:
    """The next ``job`` event as it came: its fields' text, not parsed."""
    while True:
        event = events.get(timeout=5)
        assert event is not None, "the stream ended"
        if event.get("event") == "job":
            return event


@pytest.mark.memory
def test_an_idle_stream_sends_a_heartbeat(
    serve: Callable[[ASGIApp], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream without events sends a comment line after the heartbeat's
    interval (shortened here), and keeps going after it."""
    monkeypatch.setattr(starlette_adapter, "HEARTBEAT_SECONDS", 0.3)
    store = store_from_url("memory://")
    url = serve(create_app(service_for(store)))
    target = httpx.URL(url)
    with socket.create_connection((target.host, target.port or 80), timeout=10) as sock:
        request = (
            f"GET /v1/jobs/events HTTP/1.1\r\nHost: {target.host}\r\n"
            f"x-api-key: {API_KEY}\r\n\r\n"
        )
        sock.sendall(request.encode())
        received = b""
        while received.count(b"\r\n: ping") < 2:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
    assert b"\r\n: ping" in received.split(b": ready\r\nid: ", 1)[1]
    assert b"\r\nretry: 2000\r\n\r\n" in received


class _Unreachable(StoreWrapper):
    """A store whose reads fail while ``down`` is set."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.down = False

    def read(self, job_id: str) -> Row | None:
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.inner.read(job_id)

    def page(self, query: Query) -> list[Row]:
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.inner.page(query)

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.inner.read_many(job_ids)

    def mark(self) -> Mark:
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.inner.mark()


@pytest.mark.redis
def test_a_stream_ends_when_the_store_begins_another_life(
    redis_server: Any, serve: Callable[[ASGIApp], str]
) -> None:
    """A flushed Redis numbers its changes from 1 again: a stream following
    the old numbers would skip the new life's first changes and send the
    rest with ids of the old epoch. It ends; its last event id is answered
    410, as a list's cursor is, and the client starts again."""
    import redis

    database = redis_server.url.replace("/0", "/7")
    store = store_from_url(database + "?prefix=lives:")
    try:
        url = serve(create_app(service_for(store, Clock(NOW))))
        for n in range(5):
            put(store, f"old-{n}", "running")
        with (
            stream(url, "/v1/jobs/events") as every,
            stream(url, "/v1/job/old-0/events") as one,
        ):
            last = [next_job(every) for _ in range(5)][-1]
            assert next_job(one)["data"]["job_status"] == "running"
            raw = redis.Redis.from_url(database)
            raw.flushdb()
            raw.close()
            put(store, "old-0", "queued")
            put(store, "new", "done")
            assert every.get(timeout=5) is None
            assert one.get(timeout=5) is None
        headers = {"x-api-key": API_KEY, "last-event-id": last["id"]}
        with stream(url, "/v1/jobs/events", headers=headers) as resumed:
            answer = resumed.get(timeout=5)
        assert answer is not None and answer["status"] == 410
        assert json.loads(answer["body"])["message"] == "Cursor expired"
        with stream(url, "/v1/jobs/events") as again:
            started = {next_job(again)["data"]["job_id"] for _ in range(2)}
        assert started == {"old-0", "new"}
    finally:
        store.close()


@pytest.mark.redis
def test_streams_end_when_redis_restarts_behind_its_writes(
    tmp_path: Path, serve: Callable[[ASGIApp], str]
) -> None:
    """Restarted from an AOF behind its last writes, Redis hands out the
    same positions again: a stream of one job, woken by the change hub's
    look, ends as the stream of every job does (each resumes: 410)."""
    (tmp_path / "redis").mkdir()
    server = start_redis(tmp_path / "redis")
    store = store_from_url(server.url + "?prefix=behind:")
    try:
        put(store, "kept", "running")
        server.stop()
        behind = tmp_path / "behind"
        shutil.copytree(server.directory, behind)  # its AOF at head 1
        server.start()
        wait_for(lambda: answers(store), 5)
        url = serve(create_app(service_for(store, Clock(NOW))))
        put(store, "lost", "running")
        with (
            stream(url, "/v1/jobs/events") as every,
            stream(url, "/v1/job/kept/events") as one,
        ):
            assert {next_job(every)["data"]["job_id"] for _ in range(2)} == {
                "kept",
                "lost",
            }
            assert next_job(one)["data"]["job_status"] == "running"
            server.stop()
            shutil.rmtree(server.directory)
            shutil.copytree(behind, server.directory)
            server.start()
            wait_for(lambda: answers(store), 5)
            for job_id in ("new-2", "new-3", "new-4"):  # past the old head
                put(store, job_id, "queued")
            put(store, "kept", "done")
            assert every.get(timeout=5) is None
            # Its job changed in the new run: ended, not followed with
            # positions that mean nothing there.
            ended = one.get(timeout=5)
            assert ended is None or ended.get("event") != "job"
    finally:
        store.close()
        server.stop()


@pytest.mark.memory
def test_a_store_down_when_a_stream_opens_is_answered_as_an_error(
    serve: Callable[[ASGIApp], str],
) -> None:
    """The first read comes before the response's head: a failure is the
    contract's 503, not a 200 whose body breaks off."""
    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "running"}, at=NOW)
    failing = wrap(store, _Unreachable)
    failing.down = True
    url = serve(create_app(service_for(failing)))
    with stream(url, "/v1/job/a/events") as events:
        answer = events.get(timeout=5)
    assert answer is not None and answer["status"] == 503
    assert json.loads(answer["body"])["message"] == "Job store unavailable"


@pytest.mark.memory
def test_a_store_failing_after_the_head_ends_the_stream(
    serve: Callable[[ASGIApp], str],
) -> None:
    """Once events flow, a failed read ends the body properly; the client
    resumes from its last event's id, as after any disconnect. (The hub's
    own look fails too, and wakes the stream to read for itself.)"""
    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "running"}, at=NOW)
    failing = wrap(store, _Unreachable)
    url = serve(create_app(service_for(failing)))
    with stream(url, "/v1/job/a/events") as events:
        assert _next_raw_job(events)["data"].startswith('{"job_id":"a"')
        failing.down = True
        store.put({"job_id": "a", "job_status": "done"}, at=NOW)
        while (event := events.get(timeout=5)) is not None:
            assert event.get("event") != "job", event


@pytest.mark.memory
def test_a_store_failing_answers_the_waits_and_ends_the_streams_it_held(
    serve: Callable[[ASGIApp], str],
) -> None:
    """The hub's first failed look wakes everybody: a wait answers the
    store's error and a stream ends (its client resumes), where both sat
    unanswered — the stream's page "live" — until a heartbeat's read (15 s)
    or the wait's end (30 s here)."""
    store = store_from_url("memory://")
    put(store, "a", "running", time.time())
    failing = wrap(store, _Unreachable)
    service = service_for(failing)
    url = serve(create_app(service))
    hub = changes_for(service)
    replies: list[httpx.Response] = []

    def wait() -> None:
        replies.append(
            httpx.get(
                url + "/v1/job/a",
                params={"wait": 30},
                headers={"x-api-key": API_KEY},
                timeout=60,
            )
        )

    with stream(url, "/v1/jobs/events") as events:
        assert next_job(events)["data"]["job_id"] == "a"
        waiter = threading.Thread(target=wait)
        waiter.start()
        # Both asleep past the hub's first look (which wakes everybody).
        wait_for(lambda: hub.generation >= 1 and hub.subscribed == 2, 20)
        woken = hub.generation
        started = time.monotonic()
        failing.down = True
        while (event := events.get(timeout=30)) is not None:
            assert event.get("event") != "job", event
        waiter.join(30)
        elapsed = time.monotonic() - started
    assert hub.generation > woken
    assert_error(replies[0], 503, "Job store unavailable")
    # The hub looks at least once a second; generous for a busy machine, and
    # below the heartbeat's 15 s.
    assert elapsed < 10, elapsed


@pytest.mark.memory
def test_a_token_s_stream_ends_when_the_token_expires(
    serve: Callable[[ASGIApp], str],
) -> None:
    store = store_from_url("memory://")
    url = serve(create_app(service_for(store)))
    put(store, "a", "running", time.time())
    minted = httpx.post(
        url + "/v1/tokens",
        json={"all": True, "ttl_seconds": 1},
        headers={"x-api-key": API_KEY},
    ).json()["response"]
    token = minted["token"]
    with stream(url, "/v1/jobs/events", params={"token": token}, headers={}) as events:
        first = next_job(events)
        assert events.get(timeout=10) is None  # ended by the server
    assert time.time() >= minted["expires_at"]
    resumed = httpx.get(
        url + "/v1/jobs/events",
        params={"token": token},
        headers={"last-event-id": first["id"]},
    )
    assert_error(resumed, 401, "Unauthorized")
    # The API key's streams have no such end.
    with stream(url, "/v1/jobs/events") as events:
        next_job(events)
        with pytest.raises(queue.Empty):
            events.get(timeout=2)


@pytest.mark.memory
def test_a_store_failing_the_hub_s_looks_is_logged_once_and_its_return_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Looked at every second (ten times a second without notifications)
    while anybody waits, a failing store was a warning each time."""
    caplog.set_level(logging.WARNING, logger="jobstatus.changes")
    failing = wrap(store_from_url("memory://"), _Unreachable)
    failing.down = True
    hub = changes_for(service_for(failing))
    with hub.waiter(10, "waiters"):
        # Woken by the first failed look, long before its 30 s.
        hub.wait_blocking(hub.generation, Interest(), 30)
        wait_for(lambda: hub._watcher is not None, 5)
        time.sleep(2.5)  # looks that fail meanwhile, at least two
        failing.down = False
        wait_for(lambda: len(caplog.records) == 2, 10)
    failed, back = (record.getMessage() for record in caplog.records)
    assert failed == "watching the store failed: connection refused"
    assert back.startswith("watching the store again after ")
    assert int(back.split()[5]) >= 3, back
    hub.close()
