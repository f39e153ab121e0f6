"""The WSGI adapter at the edges of what servers hand it: a chunked body
wsgiref cannot end, a worker with one thread, a path that is UTF-8."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from jobstatus_adapters.client import JobStatusClient
from jobstatus_adapters.starlette import create_app
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends import store_from_url
from jobstatus_core import JOB_STATUS_PATH, JOBS_STATUS_PATH

from .helpers import (
    API_KEY,
    free_port,
    in_progress,
    service_for,
    wait_for,
    wsgiref_server,
)
from .test_security import envelope_from
from .test_security import exchange as raw_exchange

PREFIX = "/jobs"


def exchange(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """One raw request on its own connection: the status and the envelope."""
    status, headers, body = raw_exchange(port, request)
    return status, envelope_from(status, headers, body)


def chunked_post(path: str, body: bytes) -> bytes:
    framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + framed


def sized_post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


# --- 1. a chunked body the server cannot end --------------------------------


@pytest.mark.parametrize(
    ("path", "body", "with_length"),
    [
        (JOBS_STATUS_PATH, b"this is not json", 400),
        (JOBS_STATUS_PATH, b"{" + b" " * 200_000 + b"}", 413),
        (JOB_STATUS_PATH, b'{"job_id": "old"}', 200),
        (JOBS_STATUS_PATH, b"", 200),
    ],
    ids=["not-json", "200KB", "job-id", "empty"],
)
def test_a_chunked_body_wsgiref_cannot_end_is_411_not_an_empty_body(
    path: str, body: bytes, with_length: int
) -> None:
    store = store_from_url("memory://")
    store.put({"job_id": "old", "job_status": "done"})
    try:
        with wsgiref_server(WSGIApp(service_for(store), PREFIX)) as port:
            status, envelope = exchange(port, chunked_post(PREFIX + path, body))
            # The same body with its length is read, on the same server.
            sized, _ = exchange(port, sized_post(PREFIX + path, body))
    finally:
        store.close()
    assert status == 411, envelope
    assert envelope["message"].startswith("Length required")
    assert envelope["error"] == envelope["message"]
    assert envelope["response"] is None
    assert envelope["endpoint"] == PREFIX + path
    assert sized == with_length


# --- 2. waits on a worker with one thread (real gunicorn) ---------------------

HOST_APP = """
import os

from jobstatus import WSGIApp, make_service, open_store

store = open_store(os.environ["JOBSTATUS_STORE"])
service = make_service(store, api_keys=[os.environ["API_KEY"]])


def host(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"from the host"]


app = WSGIApp(service, prefix="/jobs", fallback=host)
"""


@contextlib.contextmanager
def gunicorn(tmp_path: Path, *worker: str) -> Iterator[str]:
    """A real gunicorn serving a host app with the endpoints under /jobs."""
    (tmp_path / "host_app.py").write_text(textwrap.dedent(HOST_APP))
    port = free_port()
    env = {
        **os.environ,
        "API_KEY": API_KEY,
        "JOBSTATUS_STORE": f"sqlite://{tmp_path / 'jobs.db'}",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(tmp_path),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--graceful-timeout",
            "2",
            *worker,
            "host_app:app",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            httpx.get(url + "/hello", timeout=1)
        except httpx.TransportError:
            return False
        return True

    try:
        wait_for(answering, 30)
        yield url
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode()


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


class Background:
    """A call on a thread of its own, joined by ``result``."""

    def __init__(self, call: Any) -> None:
        self.value: Any = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, args=(call,))
        self.thread.start()

    def _run(self, call: Any) -> None:
        self.value, self.seconds = timed(call)

    def result(self) -> Any:
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.value


KEYED = {"x-api-key": API_KEY}
#: A bound for what a worker answers at once, met on a loaded machine; a
#: wait held by the worker would take its 20 s.
AT_ONCE = 8.0


def test_a_sync_worker_answers_a_wait_at_once_and_keeps_serving_the_host(
    tmp_path: Path,
) -> None:
    store = store_from_url(f"sqlite://{tmp_path / 'jobs.db'}")
    store.put({"job_id": "running", "job_status": "running"})
    store.put({"job_id": "finished", "job_status": "done"})
    try:
        with gunicorn(tmp_path) as url, httpx.Client(timeout=30) as http:
            wait = Background(
                lambda: http.get(url + "/jobs/v1/job/running?wait=20", headers=KEYED)
            )
            time.sleep(0.3)
            host, host_seconds = timed(lambda: http.get(url + "/hello"))
            waited = wait.result()
            assert host.text == "from the host" and host_seconds < AT_ONCE
            # Not held for its 20 s: the state now, said to be unmet.
            assert wait.seconds < AT_ONCE, wait.seconds
            assert waited.status_code == 200
            body = waited.json()
            assert body["response"]["job_status"] == "running"
            assert body["waited"]["met"] is False
            assert body["waited"]["seconds"] < AT_ONCE
            # A condition that holds already is met, as on any server.
            done = http.get(url + "/jobs/v1/job/finished?wait=20", headers=KEYED)
            assert done.json()["waited"]["met"] is True
            # A job that does not exist yet: its 404 now, unmet.
            absent, absent_seconds = timed(
                lambda: http.get(url + "/jobs/v1/job/later?wait=20", headers=KEYED)
            )
            assert absent.status_code == 404 and absent_seconds < AT_ONCE
            assert absent.json()["message"] == "Job not found"
            assert absent.json()["waited"]["met"] is False
            many, many_seconds = timed(
                lambda: http.post(
                    url + "/jobs/v1/jobs/wait",
                    json={"job_ids": ["running", "later"], "timeout": 20},
                    headers=KEYED,
                )
            )
            assert many_seconds < AT_ONCE, many_seconds
            assert many.status_code == 200
            assert many.json()["response"]["pending"] == ["running", "later"]
            assert many.json()["response"]["timed_out"] is True
            # The project's client loops on early answers until it is met
            # (asking about once a second), well before its 20 s are up.
            with JobStatusClient(url + PREFIX, api_key=API_KEY) as client:
                looping = Background(lambda: client.wait("running", timeout=20))
                time.sleep(0.5)
                store.put({"job_id": "running", "job_status": "done"})
                result = looping.result()
            assert result.met and result.record is not None
            assert result.record["job_status"] == "done"
            assert looping.seconds < 10, looping.seconds
    finally:
        store.close()


def test_the_client_polls_a_sync_worker_once_a_second(tmp_path: Path) -> None:
    """A server that answers every wait at once is asked again a second
    after the last ask, not as fast as it answers."""
    store = store_from_url(f"sqlite://{tmp_path / 'jobs.db'}")
    store.put({"job_id": "slow", "job_status": "running"})

    def asked(http: httpx.Client, url: str) -> float:
        text = http.get(url + "/jobs/metrics", headers=KEYED).text
        line = 'jobstatus_requests_total{code="200",operation="get_job"} '
        found = [row for row in text.splitlines() if row.startswith(line)]
        return float(found[0][len(line) :]) if found else 0.0

    try:
        with gunicorn(tmp_path) as url, httpx.Client(timeout=30) as http:
            with JobStatusClient(url + PREFIX, api_key=API_KEY) as client:
                result, seconds = timed(lambda: client.wait("slow", timeout=3))
            # Its whole timeout, and not much past it.
            assert not result.met and 2.5 < seconds < AT_ONCE, seconds
            # About one a second (3 or 4, a few more when answers come slowly
            # near the end); as fast as answered: hundreds.
            assert 2 <= asked(http, url) <= 10
    finally:
        store.close()


def test_a_threaded_worker_holds_the_wait_until_the_job_finishes(
    tmp_path: Path,
) -> None:
    store = store_from_url(f"sqlite://{tmp_path / 'jobs.db'}")
    store.put({"job_id": "running", "job_status": "running"})
    try:
        with (
            gunicorn(tmp_path, "--worker-class", "gthread", "--threads", "4") as url,
            httpx.Client(timeout=30) as http,
        ):
            wait = Background(
                lambda: http.get(url + "/jobs/v1/job/running?wait=20", headers=KEYED)
            )
            # The worker holds the wait (it read the store and sleeps), and
            # goes on holding it for half a second at least.
            wait_for(
                lambda: in_progress(url + PREFIX + "/metrics", "get_job") == 1.0, 30
            )
            time.sleep(0.5)
            host, host_seconds = timed(lambda: http.get(url + "/hello"))
            # Served beside the held wait, not after its 20 s.
            assert host.text == "from the host" and host_seconds < AT_ONCE
            assert wait.thread.is_alive()  # held: the job has not finished
            store.put({"job_id": "running", "job_status": "done"})
            body = wait.result().json()
            assert body["waited"]["met"] is True
            assert body["response"]["job_status"] == "done"
            # Held from before the half second until the change, which woke
            # it well before its 20 s.
            assert 0.4 < body["waited"]["seconds"] < 10, body["waited"]
    finally:
        store.close()


def test_a_chunked_body_under_gunicorn_is_read(tmp_path: Path) -> None:
    # gunicorn decodes chunked bodies and says where they end
    # (wsgi.input_terminated): they are read, never refused with 411.
    with gunicorn(tmp_path) as url:
        port = int(url.rsplit(":", 1)[1])
        path = PREFIX + JOBS_STATUS_PATH
        status, envelope = exchange(port, chunked_post(path, b"this is not json"))
        assert (status, envelope["message"][:12]) == (400, "Invalid JSON")
        big = b"{" + b" " * 200_000 + b"}"
        status, envelope = exchange(port, chunked_post(path, big))
        assert status == 413 and envelope["message"].startswith("Payload too large")


# --- 4. a UTF-8 path, through both adapters ---------------------------------


@contextlib.contextmanager
def uvicorn_server(app: Any) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("/v1/job/a%C3%A9", "/v1/job/a\u00e9"),
        ("/v1/job/a%FF", "/v1/job/a\ufffd"),
        ("/v1/nope/%C3%A9t%C3%A9", "/v1/nope/\u00e9t\u00e9"),
    ],
    ids=["utf-8", "invalid-utf-8", "no-route"],
)
def test_both_adapters_answer_the_same_endpoint_for_a_utf8_path(
    target: str, text: str
) -> None:
    store = store_from_url("memory://")
    service = service_for(store)
    request = (
        f"GET {PREFIX}{target} HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        with uvicorn_server(create_app(service, PREFIX)) as port:
            asgi = exchange(port, request)
        with wsgiref_server(WSGIApp(service, PREFIX)) as port:
            wsgi = exchange(port, request)
    finally:
        store.close()
    assert wsgi[1]["endpoint"] == asgi[1]["endpoint"] == PREFIX + text
    assert wsgi[0] == asgi[0]
    assert json.dumps(wsgi[1]["message"]) == json.dumps(asgi[1]["message"])
