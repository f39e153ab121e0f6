"""The Python client against real servers: every call, through both adapters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import jobstatus_adapters.clientcalls
from jobstatus_adapters.changes import changes_for
from jobstatus_adapters.client import (
    MAX_RETRY_AFTER,
    AsyncJobStatusClient,
    BadRequest,
    Forbidden,
    Gone,
    JobStatusClient,
    NotFound,
    ServerError,
    Unauthorized,
    Unavailable,
    retry_delay,
)
from jobstatus_adapters.clienterrors import error_of
from jobstatus_adapters.starlette import create_app
from jobstatus_backends import store_from_url
from jobstatus_core import Expiring, Stale, StatusService, Store, StoreUnavailable
from jobstatus_core.rows import Row
from jobstatus_core.wrapping import StoreWrapper, wrap

from .helpers import API_KEY, Writer, service_for, wait_for, waiting

pytestmark = pytest.mark.memory


def later(seconds: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def put(store: Store, job_id: str, status: str, **fields: Any) -> None:
    store.put({"job_id": job_id, "job_status": status, "response": None, **fields})


@pytest.fixture
def store() -> Iterator[Store]:
    opened = store_from_url("memory://")
    yield opened
    opened.close()


@pytest.fixture
def service(store: Store) -> StatusService:
    return service_for(store)


@pytest.fixture
def url(service: StatusService, serve_service: Callable[..., str]) -> str:
    return serve_service(service)


@pytest.fixture
def client(url: str) -> Iterator[JobStatusClient]:
    with JobStatusClient(url, api_key=API_KEY, backoff=0.01) as opened:
        yield opened


# -- reading ------------------------------------------------------------------


def test_get_answers_the_record_or_none(client: JobStatusClient, store: Store) -> None:
    put(store, "a", "done", response={"file_url": "x"})
    assert client.get("a") == {
        "job_id": "a",
        "job_status": "done",
        "response": {"file_url": "x"},
    }
    assert client.get("nope") is None
    with pytest.raises(ValueError, match="invalid job id"):
        client.get("../etc/passwd")


@pytest.mark.parametrize(
    ("base_url", "options", "said"),
    [
        ("foo", {}, "base_url: expected an http:// or https:// URL"),
        ("ftp://h", {}, "base_url: expected an http:// or https:// URL"),
        ("http://h:xx", {}, "base_url: not a URL"),
        ("http://h", {"api_key": "clé"}, "api_key: a key must be printable ASCII"),
        ("http://h", {"api_key": "a,b"}, "api_key: a key must not hold a comma"),
        ("http://h", {"token": "t\n"}, "token: a key must be printable ASCII"),
    ],
)
def test_a_client_refuses_what_no_request_could_carry(
    base_url: str, options: dict[str, str], said: str
) -> None:
    """Refused when made, not at the first request as an unreachable server
    (a bad URL) or a traceback from httpx (a key it cannot encode)."""
    with pytest.raises(ValueError, match=f"^{re.escape(said)}"):
        JobStatusClient(base_url, **options)
    with pytest.raises(ValueError, match=f"^{re.escape(said)}"):
        AsyncJobStatusClient(base_url, **options)


def test_errors_carry_their_kind_and_the_envelope_message(url: str) -> None:
    with (
        JobStatusClient(url, api_key="wrong") as stranger,
        pytest.raises(Unauthorized) as refused,
    ):
        stranger.get("a")
    assert refused.value.status == 401 and refused.value.message == "Unauthorized"
    # A 404 that is not "Job not found" (a wrong base URL) is an error, not None.
    with (
        JobStatusClient(url + "/elsewhere", api_key=API_KEY) as lost,
        pytest.raises(NotFound, match="Not found"),
    ):
        lost.get("a")


def test_list_follows_the_cursor_over_every_page(
    client: JobStatusClient, store: Store
) -> None:
    for i in range(7):
        put(store, f"j{i}", "done" if i % 2 else "running")
    listing = client.list(page_size=2, counts=True)
    assert [job["job_id"] for job in listing] == [f"j{i}" for i in range(7)]
    assert listing.counts == {"done": 3, "running": 4}
    # Later, from the last cursor: only what changed since.
    put(store, "j2", "done")
    again = client.list(cursor=listing.cursor, include_records=True)
    assert [(job["job_id"], job["record"]["job_status"]) for job in again] == [
        ("j2", "done")
    ]
    done = client.list(status=["done"], page_size=1)
    assert [job["job_id"] for job in done] == ["j1", "j3", "j5", "j2"]


def test_batch_answers_found_and_unknown_over_1000_ids(
    client: JobStatusClient, store: Store
) -> None:
    put(store, "a", "done")
    ids = ["a", *(f"n{i}" for i in range(1200)), "a"]
    result = client.batch(ids)
    assert list(result["jobs"]) == ["a"] and result["expired"] == {}
    assert len(result["unknown"]) == 1200


def test_a_token_reads_only_its_jobs(
    client: JobStatusClient, store: Store, url: str
) -> None:
    put(store, "mine", "done")
    put(store, "theirs", "done")
    grant = client.token(["mine"], ttl_seconds=60)
    assert grant["token"].startswith("jst1.") and grant["expires_at"] > 0
    with JobStatusClient(url, token=grant["token"]) as browser:
        assert browser.get("mine") is not None
        with pytest.raises(Forbidden):
            browser.get("theirs")
        assert [job["job_id"] for job in browser.list()] == ["mine"]
    with pytest.raises(ValueError):
        client.token(["a"], all=True)
    assert client.token(all=True)["token"]


# -- waiting ------------------------------------------------------------------


def test_wait_loops_over_early_answers_until_the_job_finishes(
    url: str, store: Store
) -> None:
    put(store, "j", "running")
    # Each request holds at most 0.1 s: the job finishes several answers later.
    with JobStatusClient(url, api_key=API_KEY, max_wait=0.1) as client:
        writer = later(0.6, lambda: put(store, "j", "done"))
        waited = client.wait("j", timeout=30)
        writer.join()
    assert waited.met and waited.record is not None
    assert waited.record["job_status"] == "done"


def test_wait_until_changed_keeps_the_version_of_its_start(
    url: str, store: Store, service: StatusService
) -> None:
    put(store, "c", "queued")

    def script() -> None:
        # The first wait took the version at the start; the change comes
        # several 0.1 s answers later.
        waiting(changes_for(service))
        time.sleep(0.5)
        put(store, "c", "running")

    with JobStatusClient(url, api_key=API_KEY, max_wait=0.1) as client:
        writer = Writer(script)
        waited = client.wait("c", until="changed", timeout=30)
        writer.join()
    assert waited.met and waited.record is not None
    assert waited.record["job_status"] == "running"


def test_wait_for_a_job_that_appears_and_one_that_never_does(
    url: str, store: Store, service: StatusService
) -> None:
    def script() -> None:
        # The first wait found no job; it appears a few answers later.
        waiting(changes_for(service))
        time.sleep(0.3)
        put(store, "new", "failed")

    with JobStatusClient(url, api_key=API_KEY, max_wait=0.1) as client:
        writer = Writer(script)
        appeared = client.wait("new", until="changed", timeout=30)
        writer.join()
        assert appeared.met and appeared.record is not None
        never = client.wait("never", timeout=0.3)
        assert never == type(never)(None, False)
        put(store, "slow", "running")
        slow = client.wait("slow", timeout=0.3)
        assert not slow.met and slow.record is not None


def test_a_wait_takes_the_longest_a_server_allows(
    store: Store, serve_service: Callable[..., str]
) -> None:
    # JOBSTATUS_MAX_WAIT=1 on the server; the client asks for 60 at first.
    url = serve_service(service_for(store, max_wait=1))
    put(store, "one", "running")
    put(store, "many", "running")
    with JobStatusClient(url, api_key=API_KEY) as client:
        writer = later(1.5, lambda: put(store, "one", "done"))
        waited = client.wait("one", timeout=30)
        writer.join()
        assert waited.met and client.max_wait == 1
        client.max_wait = 60
        writer = later(1.5, lambda: put(store, "many", "done"))
        many = client.wait(["many"], timeout=30)
        writer.join()
        assert many.met and client.max_wait == 1
        # Any other refusal is raised as it was.
        with pytest.raises(BadRequest, match="until must be"):
            client.wait("one", until="soon", timeout=5)  # type: ignore[call-overload]

    async def waits() -> tuple[bool, bool, float]:
        async with AsyncJobStatusClient(url, api_key=API_KEY) as client:
            one = await client.wait("one", timeout=30)
            client.max_wait = 60
            many = await client.wait(["one", "many"], timeout=30)
            return one.met, many.met, client.max_wait

    assert asyncio.run(waits()) == (True, True, 1)


def test_wait_for_many_until_all_or_any(
    url: str, store: Store, service: StatusService
) -> None:
    put(store, "a", "running")
    put(store, "b", "running")
    with JobStatusClient(url, api_key=API_KEY, max_wait=0.1) as client:
        writers = [
            later(0.3, lambda: put(store, "a", "done")),
            later(0.6, lambda: put(store, "b", "cancelled")),
        ]
        everything = client.wait(["a", "b"], timeout=30)
        for writer in writers:
            writer.join()
        assert everything.met and everything.pending == []
        assert {k: v["job_status"] for k, v in everything.jobs.items()} == {
            "a": "done",
            "b": "cancelled",
        }
        put(store, "c", "running")
        put(store, "d", "queued")
        # Once the first wait has taken the store's position at its arrival.
        hub = changes_for(service)
        writer = Writer(lambda: (waiting(hub), put(store, "d", "running")))
        first = client.wait(["c", "d"], until="changed", return_when="any", timeout=30)
        writer.join()
        assert first.met and list(first.jobs) == ["d"] and first.pending == ["c"]


def test_a_wait_for_many_asks_again_at_once_after_some_met(
    url: str, store: Store, service: StatusService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that came early because some jobs met the condition is
    progress, not a server that cannot hold waits: asked again at once."""
    # A pause after an early answer, were it taken here, would be this long:
    # far past the bound below, however loaded the machine.
    monkeypatch.setattr(jobstatus_adapters.clientcalls, "EARLY_PAUSE", 10.0)
    put(store, "a", "running")
    put(store, "b", "running")
    hub = changes_for(service)

    def script() -> None:
        # Past the hub's first look (it wakes everybody once), the first wait
        # sleeps; a finishes, and that wait answers with a alone.
        wait_for(lambda: hub.generation >= 1 and hub.subscribed == 1, 30)
        seen = hub.generation
        put(store, "a", "done")
        # The look that found a woke and dropped that wait: a wait asleep
        # past it is the client's next one, and b finishes while it holds.
        wait_for(lambda: hub.generation > seen and hub.subscribed == 1, 30)
        put(store, "b", "done")

    with JobStatusClient(url, api_key=API_KEY) as client:
        writer = Writer(script)
        started = time.monotonic()
        waited = client.wait(["a", "b"], timeout=30)
        seconds = time.monotonic() - started
        writer.join()
    assert waited.met and sorted(waited.jobs) == ["a", "b"]
    # Paused after a's answer, it came 10 s later.
    assert seconds < 5, seconds


def test_an_expired_job_meets_a_wait_for_many(url: str, store: Store) -> None:
    """Answered at once, with its tombstone: asked again and again, it was
    answered at once again, and the wait never ended."""
    put(store, "gone", "running")
    put(store, "left", "running")
    assert isinstance(store, Expiring)
    (row,) = [r for r in store.stale(Stale(before=1e12)) if r.job_id == "gone"]
    store.expire([row], at=5.0)
    with JobStatusClient(url, api_key=API_KEY, max_wait=0.1) as client:
        waited = client.wait(["gone"], timeout=30)
        assert waited.met and waited.pending == [] and waited.jobs == {}
        assert waited.expired["gone"]["expired_at"] == 5.0
        either = client.wait(["gone", "left"], return_when="any", timeout=30)
        assert either.met and list(either.expired) == ["gone"]
        assert either.pending == ["left"]
        both = client.wait(["gone", "left"], timeout=0.3)
        assert not both.met and both.pending == ["left"]


# -- retries ------------------------------------------------------------------


class FailingStore(StoreWrapper):
    """A store that is unreachable for its first ``failures`` reads."""

    def __init__(self, inner: Store, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures
        self.reads = 0

    def read(self, job_id: str) -> Row | None:
        self.reads += 1
        if self.reads <= self.failures:
            raise StoreUnavailable("connection refused")
        return self.inner.read(job_id)


def test_a_503_is_retried_until_the_store_answers(
    store: Store, serve_service: Callable[..., str]
) -> None:
    put(store, "a", "done")
    failing = wrap(store, FailingStore, 2)
    url = serve_service(service_for(failing))
    with JobStatusClient(url, api_key=API_KEY, retries=3, backoff=0.01) as client:
        assert client.get("a") is not None
    assert failing.reads == 3
    failing.reads, failing.failures = 0, 5
    with (
        JobStatusClient(url, api_key=API_KEY, retries=2, backoff=0.01) as client,
        pytest.raises(Unavailable, match="Job store unavailable"),
    ):
        client.get("a")
    assert failing.reads == 3


class AppearsWhileDown(StoreWrapper):
    """A store whose job ``appears`` is written by its first read ``after``
    seconds from now, which fails: a job started while the server was
    unreachable."""

    def __init__(self, inner: Store, after: float) -> None:
        super().__init__(inner)
        self.at = time.monotonic() + after
        #: Reads since the job appeared (None: before).
        self.reads_since: int | None = None

    def read(self, job_id: str) -> Row | None:
        if self.reads_since is not None:
            self.reads_since += 1
        elif time.monotonic() >= self.at:
            self.reads_since = 0
            put(self.inner, "appears", "queued")
            raise StoreUnavailable("connection refused")
        return self.inner.read(job_id)


def test_wait_until_changed_sees_a_job_that_appeared_between_its_requests(
    store: Store, serve_service: Callable[..., str]
) -> None:
    # Requests hold 1 s: the first is answered "absent" at 1 s; the second's
    # last read, at 2 s, fails as the job appears; the third finds it.
    appearing = wrap(store, AppearsWhileDown, 1.5)
    url = serve_service(service_for(appearing))
    with JobStatusClient(url, api_key=API_KEY, max_wait=1, backoff=0.01) as client:
        waited = client.wait("appears", until="changed", timeout=30)
    assert waited.met and waited.record is not None
    # Absent, then there, is a change: answered at the third request's
    # first read, not at the end of its hold.
    assert appearing.reads_since == 1


def test_a_wait_is_not_retried_past_its_timeout(
    store: Store, serve_service: Callable[..., str]
) -> None:
    failing = wrap(store, FailingStore, 1_000)
    url = serve_service(service_for(failing))
    # Retries 1 s apart at least would run 30 s over a 0.5 s wait.
    with (
        JobStatusClient(url, api_key=API_KEY, retries=5, backoff=1.0) as client,
        pytest.raises(Unavailable, match="Job store unavailable"),
    ):
        client.wait("a", timeout=0.5)
    assert failing.reads == 1


def test_an_unreachable_server_is_retried_then_unavailable() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    with (
        JobStatusClient("http://127.0.0.1:9", retries=2, backoff=0.01) as client,
        pytest.raises(Unavailable, match="cannot reach"),
    ):
        client.get("a")
    # The message is printed by jobstatus wait: never a password in it.
    with (
        JobStatusClient("http://u:s3cr3t@127.0.0.1:9", retries=0) as client,
        pytest.raises(Unavailable) as refused,
    ):
        client.get("a")
    assert "s3cr3t" not in str(refused.value) and "127.0.0.1:9" in str(refused.value)
    assert "Connection refused" in str(refused.value)  # which failure it was


def test_a_watch_that_cannot_reach_its_server_says_so_once_a_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A watch tries again without end (it outlives restarts): a wrong port
    is said once, not waited on in silence, nor said at each try."""
    with (
        caplog.at_level(logging.WARNING, "jobstatus.client"),
        JobStatusClient("http://127.0.0.1:9", retries=3, backoff=0.01) as client,
        pytest.raises(Unavailable),
    ):
        list(client.watch())
    (said,) = caplog.messages
    assert said.startswith("cannot reach http://127.0.0.1:9: ConnectError: ")
    assert said.endswith("; trying again")


def test_retry_after_is_honoured_and_backoff_grows() -> None:
    assert retry_delay(0, "3", 0.5) == 3.0
    assert retry_delay(5, "100000", 0.5) == MAX_RETRY_AFTER
    assert retry_delay(0, "Wed, 21 Oct 2015 07:28:00 GMT", 0.5) == 0.0
    for attempt in range(4):
        delay = retry_delay(attempt, None, 0.5)
        assert 0.25 * 2**attempt <= delay <= 0.5 * 2**attempt
    assert retry_delay(0, "soon", 0.5) <= 0.5


def test_each_status_has_its_error_kind() -> None:
    tombstone = {"job_id": "x", "job_status": "done", "expired_at": 1.0}
    gone = error_of(410, {"message": "Job expired", "response": tombstone}, "")
    assert isinstance(gone, Gone) and gone.tombstone == tombstone
    assert isinstance(error_of(400, {"message": "Invalid cursor"}, ""), BadRequest)
    assert isinstance(error_of(500, None, "<html>boom</html>"), ServerError)
    assert error_of(502, None, "").message == "no message"


# -- watching -----------------------------------------------------------------


class DropAfter:
    """Forwards to ``app``; its first event stream is cut after ``events``
    events, as a proxy or a restarting server would cut it."""

    def __init__(self, app: ASGIApp, events: int) -> None:
        self.app = app
        self.events = events
        self.requests: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode(): v.decode() for k, v in scope.get("headers", [])}
        self.requests.append(headers)
        if len(self.requests) > 1:
            await self.app(scope, receive, send)
            return
        sent = 0

        async def counting(message: Message) -> None:
            nonlocal sent
            await send(message)
            sent += message.get("body", b"").count(b"event: job")
            if sent >= self.events:
                raise ConnectionAbortedError("cut")

        # The server closes the connection of a response left unfinished.
        with contextlib.suppress(Exception):
            await self.app(scope, receive, counting)


def test_watch_resumes_after_the_stream_is_cut(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    for job_id in ("a", "b", "c"):
        put(store, job_id, "running")
    app = DropAfter(create_app(service_for(store)), events=2)
    url = serve(app)
    seen = []
    with JobStatusClient(url, api_key=API_KEY, backoff=0.01) as client:
        for change in client.watch():
            seen.append((change.kind, change.job_id, change.job_status))
            if change.job_id == "c":
                put(store, "a", "done")
            if len(seen) == 4:
                break
    assert seen == [
        ("job", "a", "running"),
        ("job", "b", "running"),
        ("job", "c", "running"),
        ("job", "a", "done"),
    ]
    assert len(app.requests) == 2
    assert "last-event-id" not in app.requests[0]
    assert app.requests[1]["last-event-id"]


def test_watch_says_when_it_starts_again_after_a_store_s_new_life(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    """Resumed on a store that began another life (410 Cursor expired): a
    ``reset`` change, then the new life's window, so that a consumer drops
    the jobs it holds and ends with the store's state."""
    for job_id in ("a", "b", "c"):
        put(store, job_id, "running")
    url = serve(DropAfter(create_app(service_for(store)), events=2))
    other = store_from_url("memory://")  # another epoch: another life
    put(other, "z", "queued")
    seen = []
    with JobStatusClient(url, api_key=API_KEY, backoff=0.01) as client:
        for change in client.watch():
            seen.append((change.kind, change.job_id))
            if change.job_id == "c":  # the snapshot's last: the cut follows
                serve(create_app(service_for(other)))
            if change.job_id == "z":
                break
    assert seen == [
        ("job", "a"),
        ("job", "b"),
        ("job", "c"),
        ("reset", ""),
        ("job", "z"),
    ]
    other.close()


def test_watch_through_wsgi_says_streams_need_asgi(
    store: Store, serve_wsgi: Callable[[Any], str]
) -> None:
    from jobstatus_adapters.wsgi import WSGIApp

    url = serve_wsgi(WSGIApp(service_for(store)))
    with (
        JobStatusClient(url, api_key=API_KEY) as client,
        pytest.raises(ServerError, match="event streams need the ASGI"),
    ):
        next(iter(client.watch()))


# -- async --------------------------------------------------------------------


def test_the_async_client_makes_the_same_calls(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    for i in range(3):
        put(store, f"j{i}", "running")
    url = serve(create_app(service_for(store)))

    async def main() -> None:
        async with AsyncJobStatusClient(url, api_key=API_KEY, max_wait=0.1) as client:
            assert (await client.get("j0")) is not None
            assert (await client.get("nope")) is None
            assert [job["job_id"] async for job in client.list(page_size=2)] == [
                "j0",
                "j1",
                "j2",
            ]
            assert (await client.batch(["j1", "x"]))["unknown"] == ["x"]
            assert (await client.token(all=True))["token"]
            writer = later(0.3, lambda: put(store, "j1", "done"))
            waited = await client.wait("j1", timeout=30)
            writer.join()
            assert waited.met
            many = await client.wait(["j1", "j2"], return_when="any", timeout=30)
            assert list(many.jobs) == ["j1"]
            changes = client.watch(status="done")
            first = await anext(changes)
            assert (first.job_id, first.job_status) == ("j1", "done")
            await changes.aclose()

    asyncio.run(main())


# -- the command ----------------------------------------------------------------


def command(url: str, *args: str, key: str = API_KEY) -> subprocess.Popen[str]:
    env = {**os.environ, "JOBSTATUS_URL": url, "API_KEY": key}
    return subprocess.Popen(
        [sys.executable, "-m", "jobstatus_adapters.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_jobstatus_wait_exits_by_how_the_job_ended(url: str, store: Store) -> None:
    put(store, "ok", "running")
    put(store, "bad", "failed")
    waiting = command(url, "wait", "ok", "--timeout", "30")
    writer = later(0.3, lambda: put(store, "ok", "done"))
    out, _ = waiting.communicate(timeout=60)
    writer.join()
    assert (waiting.returncode, out) == (0, "ok done\n")
    failed = command(url, "wait", "bad")
    assert failed.communicate(timeout=60)[0] == "bad failed\n"
    assert failed.returncode == 1
    put(store, "slow", "running")
    slow = command(url, "wait", "slow", "--timeout", "0.2")
    assert slow.communicate(timeout=60)[0] == "slow running\n"
    assert slow.returncode == 2
    refused = command(url, "wait", "ok", key="wrong")
    assert "401 Unauthorized" in refused.communicate(timeout=60)[1]
    assert refused.returncode == 3
    # Expired since it ended: by its tombstone, not "the server cannot be asked".
    assert isinstance(store, Expiring)
    store.expire([r for r in store.stale(Stale(before=1e12)) if r.job_id == "ok"], at=9)
    expired = command(url, "wait", "ok")
    assert expired.communicate(timeout=60)[0] == "ok done (expired)\n"
    assert expired.returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        ([], {"JOBSTATUS_URL": "foo"}, "JOBSTATUS_URL: expected an http://"),
        (["--url", "localhost:8080"], {}, "--url: expected an http://"),
        ([], {"API_KEY": "clé"}, "API_KEY: a key must be printable ASCII"),
        (["--api-key", "k\x7f"], {}, "--api-key: a key must be printable ASCII"),
    ],
)
@pytest.mark.parametrize("asked", ["wait", "watch"])
def test_jobstatus_wait_and_watch_name_a_bad_setting_in_one_line(
    asked: str, args: list[str], env: dict[str, str], said: str
) -> None:
    """Exit 3 as for a server that cannot be asked (2 is wait's "time up")."""
    params = ["x"] if asked == "wait" else []
    result = subprocess.run(
        [sys.executable, "-m", "jobstatus_adapters.cli", asked, *params, *args],
        env={**os.environ, "JOBSTATUS_URL": "", "API_KEY": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stderr.startswith(f"jobstatus: error: {said}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_jobstatus_watch_prints_a_line_per_change(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    put(store, "a", "running")
    put(store, "b", "queued")
    url = serve(create_app(service_for(store)))
    watching = command(url, "watch", "--status", "running,done")
    try:
        assert watching.stdout is not None
        first = watching.stdout.readline().split()
        put(store, "a", "done")
        second = watching.stdout.readline().split()
    finally:
        watching.terminate()
        watching.communicate(timeout=30)
    assert first[2:] == ["a", "running"] and second[2:] == ["a", "done"]
