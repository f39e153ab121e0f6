"""One ASGI process holding 1,000 waiters and 1,000 open streams (SPEC §10,
§11): what each costs, that a change answers them all, that leaving frees a
place at once, that the bounds answer 503, and that shutdown answers every
one of them within a second."""

from __future__ import annotations

import selectors
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobstatus_backends.recorder import Recorder

from .helpers import ServeProcess, clean_env, in_progress, wait_for

pytestmark = pytest.mark.sqlite  # one real server, once: not a store's test

KEY = "limit-key"
MANY = 1000
#: Shutdown answers every wait "within a second"; on a loaded machine, this
#: bound. A wait shutdown missed would hold its 60 s.
ANSWERED_WITHIN = 5.0


def open_many(port: int, target: str, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\n\r\n".encode()
        )
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def first_bytes(
    sockets: list[socket.socket], timeout: float
) -> dict[socket.socket, bytes]:
    """What each socket has received within ``timeout`` (the first reads)."""
    received: dict[socket.socket, bytes] = {}
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(received) < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            received[sock] = received.get(sock, b"") + data
            if b"\r\n\r\n" in received[sock] or not data:
                selector.unregister(sock)
    selector.close()
    return received


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServeProcess, str]]:
    url = f"sqlite://{tmp_path / 'jobs.db'}"
    env = clean_env(API_KEY=KEY, JOBSTATUS_STORE=url)
    served = ServeProcess(tmp_path, env, "--log-level", "warning")
    yield served, url
    served.stop()  # also closes its pipes when it has exited already


def test_a_thousand_waiters_and_streams(server: tuple[ServeProcess, str]) -> None:
    served, url = server
    recorder = Recorder(url)
    recorder.running("x")
    before = rss_kb(served.process.pid)
    streams = open_many(served.port, "/v1/jobs/events", MANY)
    assert len(first_bytes(streams, 30)) == MANY  # every stream answered
    with_streams = rss_kb(served.process.pid)
    waiters = open_many(served.port, "/v1/job/x?wait=60", MANY)
    # All are waiting now (each read the store and holds its place).
    wait_for(lambda: in_progress(served.url + "/metrics", "get_job", KEY) == MANY, 60)
    headers = {"x-api-key": KEY}
    over = httpx.get(served.url + "/v1/jobs/events", headers=headers, timeout=10)
    assert over.status_code == 503 and over.json()["message"] == "Too many open streams"
    changed = time.monotonic()
    recorder.done("x", {"ok": True})
    answers = first_bytes(waiters, 30)
    took = time.monotonic() - changed
    assert len(answers) == MANY
    statuses = {data.split(b"\r\n", 1)[0] for data in answers.values()}
    assert statuses == {b"HTTP/1.1 200 OK"}, statuses
    per_stream = (with_streams - before) / MANY
    print(
        f"\n{MANY} waiters answered {took:.2f} s after the change;"
        f" {per_stream:.1f} KB per open stream"
    )
    assert per_stream < 50, per_stream
    for sock in streams[:10]:
        sock.close()
    # Ten places are free again as soon as the server sees them go.
    wait_for(
        lambda: (
            httpx.get(
                served.url + "/v1/job/x/events", headers=headers, timeout=10
            ).status_code
            == 200
        ),
        10,
    )
    for sock in streams[10:] + waiters:
        sock.close()
    recorder.close()


def test_shutdown_answers_every_waiter_and_closes_every_stream(
    server: tuple[ServeProcess, str],
) -> None:
    served, url = server
    recorder = Recorder(url)
    recorder.running("y")
    waiters = open_many(served.port, "/v1/job/y?wait=60", 100)
    streams = open_many(served.port, "/v1/jobs/events", 100)
    first_bytes(streams, 20)
    # Every wait and stream is under way (each holds its place).
    wait_for(lambda: in_progress(served.url + "/metrics", "get_job", KEY) == 100, 30)
    wait_for(
        lambda: in_progress(served.url + "/metrics", "jobs_events", KEY) == 100, 30
    )
    stopped = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    answers = first_bytes(waiters, 30)
    took = time.monotonic() - stopped
    assert len(answers) == 100 and took < ANSWERED_WITHIN, (len(answers), took)
    statuses = {data.split(b"\r\n", 1)[0] for data in answers.values()}
    assert statuses == {b"HTTP/1.1 200 OK"}, statuses
    served.process.wait(10)
    for sock in waiters + streams:
        sock.close()
    recorder.close()
