"""The HTTP contract of SPEC §2-§3, over real HTTP, on every store."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobstatus_core import (
    JOB_STATUS_PATH,
    JOBS_STATUS_PATH,
    Mark,
    Store,
    StoreBase,
    StoreError,
    StoreUnavailable,
    Window,
)
from jobstatus_core import __version__ as version
from jobstatus_core.wrapping import StoreWrapper, wrap

from .helpers import API_KEY, Clock

ENVELOPE_KEYS = {
    "endpoint",
    "code",
    "id",
    "job_id",
    "response",
    "message",
    "pid",
    "queue_id",
    "run_time",
    "queue_time",
    "total_time",
    "queue_length",
    "build_number",
}
JSON = {"content-type": "application/json"}


def post(
    client: httpx.Client,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    **kwargs: Any,
) -> httpx.Response:
    content = (
        raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    )
    headers = {**JSON, **kwargs.pop("headers", {})}
    return client.post(path, content=content, headers=headers, **kwargs)


def envelope_of(response: httpx.Response) -> dict[str, Any]:
    """Checks what every answer shares and returns its body."""
    assert response.headers["content-type"] == "application/json"
    body = strict_json(response.content)
    assert body["code"] == response.status_code
    error_keys = {"error"} if response.status_code != 200 else set()
    # An answer to a wait says how long it waited (SPEC §10).
    waited = {"waited"} & set(body)
    assert set(body) == ENVELOPE_KEYS | error_keys | waited
    if error_keys:
        assert body["error"] == body["message"]
        # The one error that carries a response: an expired job's tombstone.
        expired = body["code"] == 410 and body["message"] == "Job expired"
        assert body["response"] is None or expired
    text = response.text
    assert "Traceback" not in text and API_KEY not in text
    return body  # type: ignore[no-any-return]


def strict_json(raw: bytes) -> Any:
    """``raw`` parsed as a browser would: UTF-8, no NaN or Infinity token."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} is not JSON: browsers refuse the answer")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


def assert_error(
    response: httpx.Response, code: int, message_start: str
) -> dict[str, Any]:
    body = envelope_of(response)
    assert response.status_code == code, body
    assert body["message"].startswith(message_start), body["message"]
    return body


# --- job/status -----------------------------------------------------------


def test_job_found_returns_the_record_verbatim(
    client: httpx.Client, store: Store
) -> None:
    record = {
        "job_id": "abc-123",
        "job_status": "done",
        "queue_id": 9,
        "process_id": 4,
        "response": {
            "code": 200,
            "response": "https://cdn/x.mp4",
            "message": "success",
        },
    }
    store.put(record)
    response = post(client, JOB_STATUS_PATH, {"job_id": "abc-123", "id": "req-1"})
    body = envelope_of(response)
    assert response.status_code == 200
    assert body["response"] == record
    assert body["message"] == "success"
    assert body["job_id"] == "abc-123"
    assert body["id"] == "req-1"
    assert body["endpoint"] == JOB_STATUS_PATH


def test_job_not_found(client: httpx.Client) -> None:
    body = assert_error(
        post(client, JOB_STATUS_PATH, {"job_id": "missing"}), 404, "Job not found"
    )
    assert body["message"] == "Job not found"
    assert body["job_id"] == "missing"


@pytest.mark.parametrize("job_id", ["a", "x" * 128, "A-b_c.d", "0", "_x", "-x", "a..b"])
def test_valid_job_ids_reach_the_store(client: httpx.Client, job_id: str) -> None:
    assert_error(
        post(client, JOB_STATUS_PATH, {"job_id": job_id}), 404, "Job not found"
    )


BAD_JOB_IDS: list[Any] = [
    "",
    "../x",
    "a/b",
    "/etc/passwd",
    "a\\b",
    "a\x00b",
    "x" * 129,
    "é",
    "jöb",
    ".hidden",
    ".",
    "..",
    " x",
    "x ",
    "a\nb",
    "%2e%2e",
    7,
    1.5,
    True,
    None,
    ["a"],
    {"a": 1},
]


class CountingStore(StoreWrapper):
    """Wraps a real store and counts the reads that reach it."""

    calls = 0

    def get(self, job_id: str) -> Any:
        self.calls += 1
        return super().get(job_id)

    def read(self, job_id: str) -> Any:
        self.calls += 1
        return super().read(job_id)

    def read_many(self, job_ids: Any) -> Any:
        self.calls += 1
        return super().read_many(job_ids)

    def window(self, cutoff: float) -> Any:
        self.calls += 1
        return super().window(cutoff)

    def page(self, query: Any) -> Any:
        self.calls += 1
        return super().page(query)

    def counts(self, statuses: Any, cutoff: Any) -> Any:
        self.calls += 1
        return super().counts(statuses, cutoff)

    def mark(self) -> Any:
        self.calls += 1
        return super().mark()


@pytest.fixture
def counted(
    store: Store, serve_service: Any
) -> Iterator[tuple[httpx.Client, CountingStore]]:
    from .helpers import service_for

    counting = wrap(store, CountingStore)
    url = serve_service(service_for(counting))  # type: ignore[arg-type]
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        yield http, counting


@pytest.mark.parametrize("job_id", BAD_JOB_IDS, ids=repr)
def test_invalid_job_id_is_400_and_touches_no_store(
    counted: tuple[httpx.Client, CountingStore], job_id: Any
) -> None:
    client, counting = counted
    body = assert_error(
        post(client, JOB_STATUS_PATH, {"job_id": job_id}), 400, "Invalid payload:"
    )
    assert "job_id" in body["message"]
    assert counting.calls == 0
    # The queried id is echoed only when valid: here a fresh request id.
    assert body["job_id"] != job_id


def test_missing_job_id_is_400(client: httpx.Client) -> None:
    body = assert_error(
        post(client, JOB_STATUS_PATH, {"id": 1}), 400, "Invalid payload:"
    )
    assert "job_id" in body["message"]
    assert body["id"] == 1


def test_empty_body_on_job_status_asks_for_job_id(client: httpx.Client) -> None:
    body = assert_error(post(client, JOB_STATUS_PATH, raw=b""), 400, "Invalid payload:")
    assert "job_id" in body["message"]


def test_other_keys_are_ignored(client: httpx.Client, store: Store) -> None:
    store.put({"job_id": "j", "job_status": "done"})
    response = post(
        client, JOB_STATUS_PATH, {"job_id": "j", "since_seconds": "junk", "extra": [1]}
    )
    assert response.status_code == 200


# --- jobs/status ----------------------------------------------------------


def test_jobs_default_window_is_600_seconds(
    client: httpx.Client, store: Store, clock: Clock
) -> None:
    store.put({"job_id": "recent", "job_status": "running"}, at=clock.now - 599)
    store.put({"job_id": "edge", "job_status": "queued"}, at=clock.now - 600)
    store.put({"job_id": "old", "job_status": "done"}, at=clock.now - 601)
    for raw in (b"", b"{}", b'{"since_seconds": null}', b"  \n"):
        body = envelope_of(post(client, JOBS_STATUS_PATH, raw=raw))
        assert body["code"] == 200
        assert body["response"] == {"recent": "running", "edge": "queued"}
        assert body["message"] == "success"


@pytest.mark.parametrize(
    "since, expected",
    [
        (0, {"now"}),
        (10, {"now", "ten"}),
        (10.5, {"now", "ten"}),
        (3600, {"now", "ten", "hour"}),
        (1e300, {"now", "ten", "hour"}),
    ],
)
def test_jobs_since_seconds(
    client: httpx.Client, store: Store, clock: Clock, since: float, expected: set[str]
) -> None:
    store.put({"job_id": "now", "job_status": "a"}, at=clock.now)
    store.put({"job_id": "ten", "job_status": "b"}, at=clock.now - 10)
    store.put({"job_id": "hour", "job_status": "c"}, at=clock.now - 3600)
    body = envelope_of(post(client, JOBS_STATUS_PATH, {"since_seconds": since}))
    assert set(body["response"]) == expected


def test_jobs_empty_is_empty_object(client: httpx.Client) -> None:
    body = envelope_of(post(client, JOBS_STATUS_PATH, {}))
    assert body["response"] == {}


def test_jobs_job_id_is_a_fresh_uuid(client: httpx.Client) -> None:
    import uuid

    ids = {envelope_of(post(client, JOBS_STATUS_PATH, {}))["job_id"] for _ in range(3)}
    assert len(ids) == 3
    for value in ids:
        assert uuid.UUID(value).version == 4


@pytest.mark.parametrize(
    "raw",
    [
        b'{"since_seconds": true}',
        b'{"since_seconds": false}',
        b'{"since_seconds": "10"}',
        b'{"since_seconds": NaN}',
        b'{"since_seconds": Infinity}',
        b'{"since_seconds": -Infinity}',
        b'{"since_seconds": -1}',
        b'{"since_seconds": -0.001}',
        b'{"since_seconds": 1e400}',
        b'{"since_seconds": [10]}',
        b'{"since_seconds": {}}',
        b'{"since_seconds": ' + b"9" * 400 + b"}",
    ],
)
def test_invalid_since_seconds_is_400(client: httpx.Client, raw: bytes) -> None:
    body = assert_error(
        post(client, JOBS_STATUS_PATH, raw=raw), 400, "Invalid payload:"
    )
    assert "since_seconds" in body["message"]


def test_status_requests_are_not_recorded_as_jobs(
    client: httpx.Client, store: Store
) -> None:
    post(client, JOB_STATUS_PATH, {"job_id": "x"})
    post(client, JOBS_STATUS_PATH, {})
    assert (
        envelope_of(post(client, JOBS_STATUS_PATH, {"since_seconds": 1e9}))["response"]
        == {}
    )


# --- the envelope -----------------------------------------------------------


@pytest.mark.parametrize(
    "request_id, echoed",
    [
        ("r-1", "r-1"),
        (42, 42),
        (1.5, 1.5),
        (True, None),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
    ],
)
def test_id_is_echoed_when_string_or_number(
    client: httpx.Client, request_id: Any, echoed: Any
) -> None:
    body = envelope_of(post(client, JOBS_STATUS_PATH, {"id": request_id}))
    assert body["id"] == echoed


def test_envelope_fields(client: httpx.Client) -> None:
    first = envelope_of(post(client, JOBS_STATUS_PATH, {}))
    second = envelope_of(post(client, JOB_STATUS_PATH, {"job_id": "nope"}))
    assert first["pid"] == os.getpid()
    assert first["queue_id"] == second["queue_id"]
    assert isinstance(first["queue_id"], int)
    assert first["queue_length"] == 0
    assert first["queue_time"] == 0
    assert first["build_number"] == version
    for body in (first, second):
        assert isinstance(body["run_time"], (int, float)) and 0 <= body["run_time"] < 5
        assert body["total_time"] == body["run_time"]
        assert round(body["run_time"], 3) == body["run_time"]


# --- errors before the body is used ----------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": ""},
        {"x-api-key": "wrong"},
        {"x-api-key": API_KEY[:-1]},
        {"x-api-key": API_KEY.upper()},
        {"x-api-key": API_KEY + "x"},
    ],
)
@pytest.mark.parametrize("path", [JOB_STATUS_PATH, JOBS_STATUS_PATH])
def test_missing_or_wrong_key_is_401(
    client: httpx.Client, headers: dict[str, str], path: str
) -> None:
    client.headers.pop("x-api-key")
    body = assert_error(
        post(client, path, {"job_id": "x"}, headers=headers), 401, "Unauthorized"
    )
    assert body["message"] == "Unauthorized"


def test_header_name_is_case_insensitive(client: httpx.Client) -> None:
    client.headers.pop("x-api-key")
    response = post(client, JOBS_STATUS_PATH, {}, headers={"X-API-KEY": API_KEY})
    assert response.status_code == 200


def test_several_keys_rotate(store: Store, serve_service: Any) -> None:
    from .helpers import service_for

    url = serve_service(service_for(store, api_keys=["old-key", "new-key"]))
    for key, code in (("old-key", 200), ("new-key", 200), ("other", 401)):
        response = httpx.post(
            url + JOBS_STATUS_PATH, content=b"{}", headers={**JSON, "x-api-key": key}
        )
        assert response.status_code == code


@pytest.mark.parametrize("path", [JOB_STATUS_PATH, JOBS_STATUS_PATH])
@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"job_id": }',
        b"\xff\xfe",
        '{"job_id": "x"}'.encode("utf-16"),
        b"[" * 5000 + b"]" * 5000,
        b"{'a': 1}",
    ],
)
def test_invalid_json_is_400(client: httpx.Client, path: str, raw: bytes) -> None:
    assert_error(post(client, path, raw=raw), 400, "Invalid JSON")


@pytest.mark.parametrize("path", [JOB_STATUS_PATH, JOBS_STATUS_PATH])
@pytest.mark.parametrize(
    "raw", [b"[]", b'"x"', b"1", b"null", b"true", b'[{"job_id": "x"}]']
)
def test_json_that_is_not_an_object_is_400(
    client: httpx.Client, path: str, raw: bytes
) -> None:
    assert_error(post(client, path, raw=raw), 400, "Invalid payload")


@pytest.mark.parametrize("path", [JOB_STATUS_PATH, JOBS_STATUS_PATH])
def test_body_over_the_limit_is_413(client: httpx.Client, path: str) -> None:
    padding = "x" * 65536
    assert_error(
        post(client, path, {"job_id": "x", "pad": padding}), 413, "Payload too large"
    )
    # Without a Content-Length (chunked), the limit holds while reading.
    chunks = (b"{" + b" " * 8192 for _ in range(10))
    response = client.post(path, content=chunks, headers=JSON)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "Payload too large")


def test_body_at_the_limit_is_read(client: httpx.Client) -> None:
    raw = b'{"job_id": "x"}'
    raw = raw + b" " * (65536 - len(raw))
    assert_error(post(client, JOB_STATUS_PATH, raw=raw), 404, "Job not found")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "json",
    ],
)
def test_non_json_content_type_is_415(client: httpx.Client, content_type: str) -> None:
    body = assert_error(
        post(client, JOBS_STATUS_PATH, {}, headers={"content-type": content_type}),
        415,
        "Unsupported media type",
    )
    assert body["message"].endswith("; send Content-Type: application/json")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "json"]
)
def test_empty_body_is_the_default_whatever_its_content_type(
    client: httpx.Client, store: Store, clock: Clock, content_type: str
) -> None:
    # wsgiref's and Django's test clients label an empty body text/plain.
    store.put({"job_id": "recent", "job_status": "running"}, at=clock.now - 1)
    headers = {"content-type": content_type}
    listing = post(client, JOBS_STATUS_PATH, raw=b"", headers=headers)
    assert envelope_of(listing)["response"] == {"recent": "running"}
    assert_error(
        post(client, JOB_STATUS_PATH, raw=b"", headers=headers),
        400,
        "Invalid payload: job_id is required",
    )
    # One byte is a body: its type is checked.
    assert_error(
        post(client, JOBS_STATUS_PATH, raw=b" ", headers=headers),
        415,
        "Unsupported media type",
    )


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
        "application/problem+json",
    ],
)
def test_json_content_types_are_accepted(
    client: httpx.Client, content_type: str
) -> None:
    assert (
        post(
            client, JOBS_STATUS_PATH, {}, headers={"content-type": content_type}
        ).status_code
        == 200
    )


def test_no_content_type_is_accepted(client: httpx.Client) -> None:
    response = client.post(JOBS_STATUS_PATH, content=b"{}")
    assert "content-type" not in response.request.headers
    assert response.status_code == 200


@pytest.mark.parametrize(
    "method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"]
)
@pytest.mark.parametrize("path", [JOB_STATUS_PATH, JOBS_STATUS_PATH])
def test_other_methods_are_405_with_allow(
    client: httpx.Client, method: str, path: str
) -> None:
    response = client.request(method, path)
    assert_error(response, 405, "Method not allowed")
    assert response.headers["allow"] == "POST"


def test_a_path_with_leading_slashes_is_none_of_ours(client: httpx.Client) -> None:
    url = client.base_url
    for path in ("//v1/job/a", "///metrics", "//v1/toolkit/jobs/status"):
        connection = http.client.HTTPConnection(url.host, url.port, timeout=5)
        try:
            connection.request("GET", path, headers={"x-api-key": API_KEY})
            answer = connection.getresponse()
            assert answer.status == 404, path
            assert json.loads(answer.read())["message"] == "Not found"
        finally:
            connection.close()


def test_head_is_405_without_body(client: httpx.Client) -> None:
    response = client.head(JOBS_STATUS_PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    # Read raw, on one kept connection (httpx reads no body after a HEAD):
    # bytes after the HEAD's head would be taken for the next answer's.
    url = client.base_url
    head = f"HEAD {JOBS_STATUS_PATH} HTTP/1.1\r\nHost: {url.host}\r\n\r\n"
    post = (
        f"POST {JOBS_STATUS_PATH} HTTP/1.1\r\nHost: {url.host}\r\n"
        f"x-api-key: {API_KEY}\r\ncontent-length: 0\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port or 80), timeout=5) as sock:
        sock.sendall(head.encode())
        first = _head_of(sock)
        sock.sendall(post.encode())
        second = _head_of(sock)
    assert first.startswith(b"HTTP/1.1 405 ")
    assert second.startswith(b"HTTP/1.1 200 "), second[:80]


def _head_of(sock: socket.socket) -> bytes:
    """The bytes up to the end of the next answer's head."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        data += sock.recv(1)
    return data


# --- store failures ---------------------------------------------------------


class FailingStore(StoreBase):
    """A store every read of which raises ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def read(self, job_id: str) -> Any:
        raise self.exc

    def window(self, cutoff: float) -> Any:
        raise self.exc

    def page(self, query: Any) -> Any:
        raise self.exc

    def counts(self, statuses: Any, cutoff: Any) -> Any:
        raise self.exc

    def mark(self) -> Mark:
        raise self.exc

    def put(self, record: Any, *, at: float | None = None) -> None:
        raise self.exc

    def swap(self, record: Any, *, expected: Any, at: Any = None) -> bool:
        raise self.exc

    def close(self) -> None:
        pass


@pytest.mark.core
@pytest.mark.parametrize(
    "exc, reason",
    [
        (
            StoreError("SQLite error: database is locked"),
            "SQLite error: database is locked",
        ),
        (
            PermissionError(13, "Permission denied", "/secret/path/jobs/x.json"),
            "Permission denied",
        ),
        (
            RuntimeError(
                'boom\nTraceback (most recent call last):\n  File "/srv/app.py"'
            ),
            "RuntimeError",
        ),
    ],
)
def test_store_failure_is_500_with_one_line_reason(
    serve_service: Any, exc: Exception, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    from .helpers import service_for

    url = serve_service(service_for(FailingStore(exc)))  # type: ignore[arg-type]
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY, **JSON}) as http:
        one = assert_error(
            http.post(JOB_STATUS_PATH, content=b'{"job_id": "x"}'),
            500,
            "Failed to retrieve job status: ",
        )
        many = assert_error(
            http.post(JOBS_STATUS_PATH, content=b"{}"),
            500,
            "Failed to retrieve job statuses: ",
        )
    assert one["message"] == f"Failed to retrieve job status: {reason}"
    assert many["message"] == f"Failed to retrieve job statuses: {reason}"
    for body in (one, many):
        assert (
            "\n" not in body["message"]
            and "/secret" not in body["message"]
            and "/srv" not in body["message"]
        )
    # A reason a store wrote for people is logged as one line; anything
    # unexpected keeps its traceback for the operator.
    logged = [r for r in caplog.records if r.name == "jobstatus"]
    assert len(logged) == 2
    assert all((r.exc_info is None) == isinstance(exc, StoreError) for r in logged)


@pytest.mark.core
def test_unreachable_store_is_503_and_one_line_a_minute(
    serve_service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from .helpers import service_for

    caplog.set_level(logging.WARNING, logger="jobstatus")
    failing = FailingStore(StoreUnavailable("connection refused"))
    url = serve_service(service_for(failing))  # type: ignore[arg-type]
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY, **JSON}) as http:
        for _ in range(3):  # a client polling, or a probe
            for path, raw in (
                (JOB_STATUS_PATH, b'{"job_id": "x"}'),
                (JOBS_STATUS_PATH, b"{}"),
            ):
                answer = http.post(path, content=raw)
                body = assert_error(answer, 503, "Job store unavailable")
                assert body["message"] == "Job store unavailable"
                # As the limits' 503s: when to try again.
                assert answer.headers["retry-after"] == "1"
    logged = [r.getMessage() for r in caplog.records if r.name == "jobstatus"]
    assert logged == ["job store unavailable: connection refused"]


class ListingStore(FailingStore):
    """A plug-in store whose listing members are ``members``, as given."""

    def __init__(self, members: list[str]) -> None:
        super().__init__(RuntimeError("unused"))
        self.members = members

    def mark(self) -> Mark:
        return Mark("fixed", 1)

    def window(self, cutoff: float) -> Window:
        return Window(self.members, None)


@pytest.mark.core
@pytest.mark.parametrize(
    "members, listing",
    [
        (['"a":"fertig \u2713"'], {"a": "fertig \u2713"}),
        (['"a":"\ud800"'], {"a": "\ud800"}),
        (
            ['"a":NaN', '"b":Infinity', '"c":[-Infinity]'],
            {"a": None, "b": None, "c": [None]},
        ),
        # Valid JSON (beyond a double's range, JSON.parse reads Infinity).
        (['"a":"done"', '"b":{"n":1e999}'], {"a": "done", "b": {"n": float("inf")}}),
    ],
)
def test_store_listing_text_is_sent_as_strict_json(
    serve_service: Any, members: list[str], listing: dict[str, Any]
) -> None:
    from .helpers import service_for

    url = serve_service(service_for(ListingStore(members)))  # type: ignore[arg-type]
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        for _ in range(2):  # checked once, then known
            body = envelope_of(http.post(JOBS_STATUS_PATH))
            assert body["code"] == 200
            assert body["response"] == listing


@pytest.mark.core
@pytest.mark.parametrize(
    "members",
    [['"a":'], ['"a":done'], ["'a': 'done'"], ['"a"'], ['"a":1,'], ['"a":"\x00"']],
)
def test_store_listing_that_is_not_json_is_500(
    serve_service: Any, members: list[str]
) -> None:
    from .helpers import service_for

    url = serve_service(service_for(ListingStore(members)))  # type: ignore[arg-type]
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        body = assert_error(
            http.post(JOBS_STATUS_PATH), 500, "Failed to retrieve job statuses: "
        )
    assert body["message"].startswith(
        "Failed to retrieve job statuses: the store's listing is not"
    )
