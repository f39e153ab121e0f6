"""Path safety, authentication and limits (docs/security.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobstatus_adapters.starlette import create_app
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends.filesystem import FileStore
from jobstatus_core import JOB_STATUS_PATH, JOBS_STATUS_PATH, ApiKeyAuth, StatusService

from .helpers import API_KEY, ServeProcess, clean_env, service_for, wsgiref_server
from .test_http_contract import strict_json

pytestmark = pytest.mark.filesystem

JSON = {"content-type": "application/json", "x-api-key": API_KEY}

TRAVERSAL_IDS = [
    "../secret",
    "../../etc/passwd",
    "..",
    ".",
    "./a",
    "a/b",
    "/etc/passwd",
    "/",
    "//x",
    "..\\secret",
    "a\\b",
    "C:\\Windows\\win.ini",
    "\\\\server\\share",
    "%2e%2e%2fsecret",
    "..%2Fsecret",
    "%2e%2e",
    "..%252f",
    "..%c0%af",
    "a\x00b",
    "secret\x00.json",
    "\x00",
    "ok\n",
    "ok\r\nx-injected: 1",
    "\u2024\u2024/secret",
    "\uff0e\uff0e/secret",
    "..\uff0fsecret",
    "\u2025",
    "a\u2215b",
    "\uff23\uff2f\uff2e",
    "sécret",
    "ok\u200b",
    "x" * 10_000,
    "a" * 129,
    "/dev/zero",
    "/dev/random",
    "/proc/self/environ",
    "CON:",
    "NUL:",
    "COM1:",
    "$(id)",
    "`id`",
    "a;rm -rf /",
    "a|b",
    "a&b",
    "a>b",
    "'; DROP TABLE jobs; --",
    '" OR 1=1 --',
    "*",
    "?",
    "[a]",
    "{a}",
    "~",
    "~root",
    "a b",
    "",
    " ",
    ".secret",
    ".hidden.json",
    ".json",
]


# Windows device names are valid ids (SPEC §2) and harmless here: the store
# opens only `<id>.json` regular files, so they are simply not found.
DEVICE_NAMES = ["CON", "NUL", "COM1", "LPT1", "aux", "prn.json", "nul.txt"]


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    (tmp_path / "storage" / "jobs").mkdir(parents=True)
    (tmp_path / "storage" / "secret.json").write_text(
        '{"job_id": "secret", "job_status": "leaked"}'
    )
    (tmp_path / "storage" / "jobs" / "ok.json").write_text(
        '{"job_id": "ok", "job_status": "done"}'
    )
    return tmp_path / "storage"


@pytest.mark.parametrize("index", [True, False], ids=["index", "scan"])
def test_traversal_and_injection_ids_are_400_and_open_nothing_outside_jobs(
    store_root: Path, serve_service: Callable[..., str], index: bool
) -> None:
    store = FileStore(store_root, index=index)
    url = serve_service(service_for(store))
    jobs_prefix = str(store_root / "jobs") + os.sep
    opened: list[str] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if (
            event in ("open", "os.scandir", "os.listdir")
            and args
            and isinstance(args[0], (str, bytes))
        ):
            path = os.fsdecode(args[0])
            if path.startswith(str(store_root.parent)):
                opened.append(path)

    sys.addaudithook(audit)  # hooks cannot be removed: it only records
    try:
        with httpx.Client(base_url=url, headers=JSON) as http:
            for job_id in TRAVERSAL_IDS:
                response = http.post(JOB_STATUS_PATH, json={"job_id": job_id})
                assert response.status_code == 400, job_id
                assert response.json()["message"].startswith("Invalid payload: job_id")
            for job_id in DEVICE_NAMES:
                response = http.post(JOB_STATUS_PATH, json={"job_id": job_id})
                assert response.status_code == 404, job_id
            assert http.post(JOB_STATUS_PATH, json={"job_id": "ok"}).status_code == 200
            listing = http.post(JOBS_STATUS_PATH, json={}).json()["response"]
            assert listing == {"ok": "done"}
    finally:
        recorded = list(opened)
        opened.clear()
        store.close()
    assert recorded, "the audit hook saw nothing: the test would prove nothing"
    outside = [
        p
        for p in recorded
        if not (p.startswith(jobs_prefix) or p == jobs_prefix.rstrip(os.sep))
    ]
    assert outside == []


def test_every_key_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    auth = ApiKeyAuth(["first", "second", "third"])
    assert auth({"x-api-key": "first"})
    # The match on the first key does not stop the comparison early.
    assert len(calls) == 3
    calls.clear()
    assert not auth({"x-api-key": "nope"})
    assert len(calls) == 3


@pytest.mark.parametrize(
    "given",
    [
        None,
        "",
        " ",
        API_KEY.upper(),
        API_KEY[:-1],
        API_KEY[1:],
        API_KEY + " x",
        "x" + API_KEY,
        API_KEY * 2,
        f"Bearer {API_KEY}",
    ],
)
def test_wrong_keys_are_refused(given: str | None) -> None:
    auth = ApiKeyAuth([API_KEY, "other-key"])
    headers = {} if given is None else {"x-api-key": given}
    assert auth(headers) is False


def test_padded_key_is_refused_by_the_check_itself() -> None:
    # HTTP servers strip spaces around a header value before the app sees it;
    # a key that arrives padded all the same is not the key.
    auth = ApiKeyAuth([API_KEY])
    assert not auth({"x-api-key": f" {API_KEY}"}) and not auth(
        {"x-api-key": f"{API_KEY}\t"}
    )


def test_the_key_never_appears_in_logs_or_answers(
    store_root: Path,
    serve_service: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (store_root / "jobs" / "bad.json").write_text("{")
    store = FileStore(store_root, index=False)
    url = serve_service(service_for(store))
    with caplog.at_level(logging.DEBUG):
        texts = []
        for key in (API_KEY, API_KEY + "x", ""):
            for path, body in (
                (JOB_STATUS_PATH, {"job_id": "bad"}),
                (JOBS_STATUS_PATH, {}),
                (JOB_STATUS_PATH, {"job_id": "../x"}),
            ):
                response = httpx.post(url + path, json=body, headers={"x-api-key": key})
                texts.append(response.text + str(response.headers))
    store.close()
    assert any("Failed to retrieve" in text for text in texts)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert API_KEY not in caplog.text
    assert not any(API_KEY in text for text in texts)


def bytes_sent_before_answer(
    port: int, headers: bytes, total: int, chunk: bytes
) -> tuple[int, bytes]:
    """Stream ``chunk`` after ``chunk``, ``total`` bytes at most; stop at the answer."""
    sent = 0
    pending = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(headers)
        sock.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if b"\r\n\r\n" in answer:
                return sent, answer
            if not pending and sent < total:
                pending = chunk
            if not pending:
                time.sleep(0.01)
                continue
            try:
                count = sock.send(pending)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.001)
                continue
            pending = pending[count:]
            sent += count
    raise AssertionError("no answer")


HUNDRED_MB = 100 * 1024 * 1024


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
@pytest.mark.parametrize("framing", ["content-length", "expect-continue", "chunked"])
def test_100_mb_body_is_refused_without_being_read(
    tmp_path: Path, interface: str, framing: str
) -> None:
    """Refused near the limit; with ``Expect: 100-continue``, the 413 is
    the first answer, no ``100 Continue`` inviting the body first."""
    server = ServeProcess(
        tmp_path,
        clean_env(API_KEY=API_KEY, JOBSTATUS_STORE="memory://"),
        "--interface",
        interface,
    )
    try:
        framing_header = {
            "content-length": f"Content-Length: {HUNDRED_MB}",
            "expect-continue": f"Content-Length: {HUNDRED_MB}\r\nExpect: 100-continue",
            "chunked": "Transfer-Encoding: chunked",
        }[framing]
        head = (
            f"POST {JOBS_STATUS_PATH} HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\n{framing_header}\r\n\r\n"
        ).encode()
        data = b"x" * 65536
        if framing == "chunked":
            data = b"10000\r\n" + data + b"\r\n"  # one framed 64 KiB chunk
        sent, answer = bytes_sent_before_answer(server.port, head, HUNDRED_MB, data)
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Our envelope, not a server's own plain-text refusal.
    assert b"content-type: application/json" in answer.lower()
    # Refused within a few chunks of the limit, not after 100 MB.
    assert sent < 8 * 1024 * 1024, sent


# --- HTTP edges: what reaches the adapters from the wire ---------------------


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request (it asks to close); the status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = (line.split(":", 1) for line in lines)
    headers = {name.strip().lower(): value.strip() for name, value in fields}
    return int(status_line.split()[1]), headers, body


def envelope_from(status: int, headers: dict[str, str], body: bytes) -> Any:
    assert headers["content-type"] == "application/json", (status, body[:200])
    answer = strict_json(body)
    assert answer["code"] == status
    return answer


@pytest.fixture(params=["asgi", "waitress", "wsgiref"])
def serve_port(
    request: pytest.FixtureRequest,
    serve: Callable[[Any], str],
    serve_wsgi: Callable[[Any], str],
) -> Iterator[Callable[[StatusService], int]]:
    """Serve a service on a real server of each kind; returns its port."""
    with contextlib.ExitStack() as stack:

        def start(service: StatusService) -> int:
            if request.param == "asgi":
                url = serve(create_app(service))
            elif request.param == "waitress":
                url = serve_wsgi(WSGIApp(service))
            else:
                return stack.enter_context(wsgiref_server(WSGIApp(service)))
            return int(url.rsplit(":", 1)[1])

        yield start


def raw_post(path: str, *fields: str, body: bytes = b"{}") -> bytes:
    head = "".join(f"{field}\r\n" for field in fields)
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{head}\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    "keys",
    [(API_KEY, API_KEY), (API_KEY, "wrong"), ("wrong", API_KEY), (API_KEY, "")],
)
def test_a_repeated_api_key_is_401_on_every_adapter(
    store_root: Path, serve_port: Callable[[StatusService], int], keys: tuple[str, str]
) -> None:
    store = FileStore(store_root, index=False)
    try:
        port = serve_port(service_for(store))
        one = exchange(port, raw_post(JOBS_STATUS_PATH, f"x-api-key: {API_KEY}"))
        assert envelope_from(*one)["code"] == 200
        two = exchange(
            port, raw_post(JOBS_STATUS_PATH, *(f"X-Api-Key: {key}" for key in keys))
        )
        assert envelope_from(*two)["message"] == "Unauthorized"
    finally:
        store.close()


@pytest.mark.parametrize(
    "target, code, endpoint",
    [
        ("*", 404, "*"),
        (f"http://x{JOBS_STATUS_PATH}", 200, JOBS_STATUS_PATH),
        (f"http://x:8080{JOBS_STATUS_PATH}?a=1", 200, JOBS_STATUS_PATH),
        ("http://x/elsewhere", 404, "/elsewhere"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "OPTIONS"])
def test_asterisk_and_absolute_form_targets_answer_the_envelope(
    store_root: Path,
    serve_port: Callable[[StatusService], int],
    target: str,
    code: int,
    endpoint: str,
    method: str,
) -> None:
    store = FileStore(store_root, index=False)
    try:
        port = serve_port(service_for(store))
        request = raw_post(target, f"x-api-key: {API_KEY}").replace(
            b"POST", method.encode(), 1
        )
        answer = envelope_from(*exchange(port, request))
    finally:
        store.close()
    if method != "POST" and code == 200:
        code = 405  # an endpoint reached by its absolute form: its own rules
    assert answer["code"] == code, answer
    assert answer["endpoint"] == endpoint


def test_content_length_of_other_digits_is_400_not_500(
    store_root: Path, serve_port: Callable[[StatusService], int]
) -> None:
    # "\xb2" is "²" in Latin-1, as servers decode headers: str.isdigit() says
    # yes, int() says no.
    store = FileStore(store_root, index=False)
    try:
        port = serve_port(service_for(store))
        request = raw_post(JOBS_STATUS_PATH, f"x-api-key: {API_KEY}").replace(
            b"Content-Length: 2", b"Content-Length: \xb2"
        )
        status, headers, body = exchange(port, request)
    finally:
        store.close()
    assert status == 400, body[:200]
    if headers.get("content-type") == "application/json":
        assert strict_json(body)["message"] == (
            "Invalid Content-Length: expected ASCII digits"
        )
    else:  # uvicorn and waitress refuse it before any app runs
        assert b"Traceback" not in body


def test_the_asgi_adapter_takes_content_length_as_ascii_digits(
    store_root: Path,
) -> None:
    # uvicorn refuses such a header itself; other ASGI servers may pass it on.
    store = FileStore(store_root, index=False)
    app = create_app(service_for(store))
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": JOBS_STATUS_PATH,
        "raw_path": JOBS_STATUS_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"x-api-key", API_KEY.encode()), (b"content-length", b"\xb2")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    try:
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    finally:
        store.close()
    assert sent[0]["status"] == 400
    answer = strict_json(sent[1]["body"])
    assert answer["message"] == "Invalid Content-Length: expected ASCII digits"


@pytest.mark.parametrize("index", [True, False], ids=["index", "scan"])
def test_non_finite_numbers_in_job_files_answer_strict_json(
    store_root: Path, serve_service: Callable[..., str], index: bool
) -> None:
    # Python's parser reads NaN, Infinity and 1e999 in a job file as floats.
    (store_root / "jobs" / "odd.json").write_text(
        '{"job_id": "odd", "job_status": NaN,'
        ' "response": {"progress": Infinity, "size": 1e999, "ok": -Infinity}}'
    )
    store = FileStore(store_root, index=index)
    try:
        url = serve_service(service_for(store))
        with httpx.Client(base_url=url, headers=JSON) as http:
            one = http.post(JOB_STATUS_PATH, json={"job_id": "odd"})
            many = http.post(JOBS_STATUS_PATH, json={})
    finally:
        store.close()
    record = strict_json(one.content)["response"]
    assert record == {
        "job_id": "odd",
        "job_status": None,
        "response": {"progress": None, "size": None, "ok": None},
    }
    assert strict_json(many.content)["response"] == {"ok": "done", "odd": None}


SLOW_CLIENTS = 200
#: How long the normal request may take beside them (a client timeout): by
#: hand it took 38 to 530 ms beside 1,000 slow clients (docs/security.md), so
#: this bound is for a loaded machine. A server they stop does not answer it
#: at all: their requests stay open for the whole test, and the server's own
#: limit for an idle connection is 120 s.
PROBE_TIMEOUT = 10.0


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_slow_header_clients_do_not_stop_the_server(
    tmp_path: Path, interface: str
) -> None:
    server = ServeProcess(
        tmp_path,
        clean_env(API_KEY=API_KEY, JOBSTATUS_STORE="memory://"),
        "--interface",
        interface,
    )
    slow: list[socket.socket] = []
    try:
        # Each sends its request line and a header, then a header a round:
        # a request that never ends, as slowloris sends them.
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(f"POST {JOBS_STATUS_PATH} HTTP/1.1\r\nHost: x\r\n".encode())
            slow.append(sock)
        for round in range(2):
            for sock in slow:
                sock.sendall(f"x-slow-{round}: 1\r\n".encode())
            started = time.monotonic()
            response = httpx.post(
                server.url + JOBS_STATUS_PATH,
                headers={"x-api-key": API_KEY},
                timeout=PROBE_TIMEOUT,
            )
            print(f"\n{interface}: answered in {time.monotonic() - started:.3f} s")
            assert response.status_code == 200
    finally:
        for sock in slow:
            sock.close()
        server.stop()


@pytest.fixture(scope="module")
def wsgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``jobstatus serve --interface wsgi`` for the refusals below."""
    server = ServeProcess(
        tmp_path_factory.mktemp("wsgi"),
        clean_env(API_KEY=API_KEY, JOBSTATUS_STORE="memory://"),
        "--interface",
        "wsgi",
    )
    yield server
    server.stop()


MALFORMED_HEADS = [
    b"GARBAGE\r\nHost: x\r\n\r\n",
    b"\x00\x01\x02 / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/jobs/batch HTTP/1.1\r\nHost: x\r\nx-bad: a\x00b\r\n\r\n",
    b"POST /v1/jobs/batch HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
]


@pytest.mark.parametrize(
    "head",
    MALFORMED_HEADS,
    ids=["request-line", "control-bytes", "nul-in-header", "header-without-colon"],
)
def test_wsgi_refuses_a_malformed_head_in_the_envelope(
    wsgi_server: ServeProcess, head: bytes
) -> None:
    # Refused before waitress had parsed a path: it answered nothing and left
    # the connection open, logging a traceback of its own.
    answer = envelope_from(*exchange(wsgi_server.port, head))
    assert answer["code"] == 400
    assert answer["message"].startswith("Bad Request")


def test_wsgi_refusals_of_the_server_itself_are_the_envelope(
    wsgi_server: ServeProcess,
) -> None:
    bad_length = raw_post(JOBS_STATUS_PATH, f"x-api-key: {API_KEY}").replace(
        b"Content-Length: 2", b"Content-Length: \xb2"
    )
    answer = envelope_from(*exchange(wsgi_server.port, bad_length))
    assert answer["code"] == 400
    assert answer["endpoint"] == JOBS_STATUS_PATH
    assert answer["message"].startswith("Bad Request")
