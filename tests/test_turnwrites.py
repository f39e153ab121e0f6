"""A write held until the next one or the end of the loop's turn
(``jobstatus_adapters.turnwrites``): a response in one TCP segment, and
nothing lost, late or out of order for it. Real uvicorn servers on loopback
ports, and real sockets; the segments counted by the kernel (TCP_INFO)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import cast

import h11
import pytest
import uvloop
from starlette.types import Receive, Scope, Send

from jobstatus_adapters.serverstack import ServerStack
from jobstatus_adapters.turnwrites import HELD_AT_MOST, TurnWrites

from .helpers import LiveServer

pytestmark = [
    pytest.mark.core,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="counts segments with Linux's TCP_INFO",
    ),
]

PART = 10_000
BIG = 20 * PART  # three times the largest write held


def data_segments_in(sock: socket.socket) -> int:
    """Segments with data this socket has received (``tcpi_data_segs_in``,
    at byte 152 of Linux's ``struct tcp_info``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return int(struct.unpack_from("I", info, 152)[0])


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers its path back; ``/big``: ``BIG`` bytes in 10 KB parts, all
    written in one turn; ``/echo``: the request's body."""
    assert scope["type"] == "http"
    body = scope["path"].encode()
    if scope["path"] == "/204":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/echo":
        body = (await receive())["body"]
    parts = [body]
    if scope["path"] == "/big":
        parts = [b"x" * PART] * (BIG // PART)
    length = sum(map(len, parts))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(length).encode())],
        }
    )
    for index, part in enumerate(parts):
        more = index < len(parts) - 1
        await send({"type": "http.response.body", "body": part, "more_body": more})


STACKS = {
    "uvloop, httptools": ServerStack(loop="uvloop", http="httptools"),
    "asyncio, h11": ServerStack(loop="asyncio", http="h11"),
}


@pytest.fixture(scope="module", params=list(STACKS))
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    stack = STACKS[request.param]
    with LiveServer(app, loop=stack.loop, http=stack.protocol()) as live:
        yield live


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def responses(sock: socket.socket, count: int) -> list[tuple[h11.Response, bytes]]:
    """The next ``count`` responses on ``sock``, parsed by h11."""
    client = h11.Connection(h11.CLIENT)
    answers: list[tuple[h11.Response, bytes]] = []
    head: h11.Response | None = None
    body = b""
    while len(answers) < count:
        if client.our_state is h11.IDLE:
            # h11 reads a response only to a request it sent: tell it one went.
            client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            client.send(h11.EndOfMessage())
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(1 << 16))
        elif isinstance(event, h11.Response):
            head, body = event, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            answers.append((head, body))
            client.start_next_cycle()
    return answers


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode()


def test_each_response_leaves_in_one_segment(server: LiveServer) -> None:
    with connect(server.port) as sock:
        for number in range(5):
            sock.sendall(get(f"/{number}"))
            [(head, body)] = responses(sock, 1)
            assert (head.status_code, body) == (200, f"/{number}".encode())
        assert data_segments_in(sock) == 5


def test_uvicorn_alone_sends_two_segments_a_response() -> None:
    """What the probe above tells apart: uvicorn's own protocol writes the
    status line and headers, then the body."""
    with (
        LiveServer(app, loop="uvloop", http="httptools") as live,
        connect(live.port) as sock,
    ):
        for number in range(5):
            sock.sendall(get(f"/{number}"))
            responses(sock, 1)
        assert data_segments_in(sock) > 5


def test_pipelined_answers_keep_their_order(server: LiveServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"".join(get(f"/{number}") for number in range(40)))
        answers = responses(sock, 40)
    assert [body for _, body in answers] == [f"/{n}".encode() for n in range(40)]


def test_a_body_written_in_many_parts_in_one_turn_arrives_whole(
    server: LiveServer,
) -> None:
    with connect(server.port) as sock:
        sock.sendall(get("/big") + get("/after"))
        answers = responses(sock, 2)
    assert [body for _, body in answers] == [b"x" * BIG, b"/after"]


def test_a_head_answer_without_a_body_write_is_sent(server: LiveServer) -> None:
    """uvicorn writes no body for HEAD: the held status line goes out at
    the turn's end, not with a next write that never comes."""
    with connect(server.port) as sock:
        sock.sendall(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while not received.endswith(b"\r\n\r\n"):
            received += sock.recv(1024)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 2\r\n" in received


def test_a_closing_answer_is_sent_whole_before_the_close(server: LiveServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(get("/last", "Connection: close"))
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n/last")


def test_a_continue_is_sent_while_the_request_waits_for_it(server: LiveServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        # The client sends its body only once told to (the socket's
        # timeout, 10 s, fails the test otherwise).
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"hello")
        [(head, body)] = responses(sock, 1)
    assert (head.status_code, body) == (200, b"hello")


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_a_connection(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    test: Callable[[TurnWrites, socket.socket], object],
) -> None:
    """Run ``test`` in a loop of ``new_loop``, with the server side of a
    loopback connection as a ``TurnWrites`` and its client's socket."""

    async def main() -> None:
        accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # uvloop's transports are not asyncio.Transport's subclasses.
                accepted.set_result(cast(asyncio.Transport, transport))

        server = await loop.create_server(Accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with connect(port) as client:
            client.setblocking(False)
            turn = TurnWrites(await accepted)
            result = test(turn, client)
            if asyncio.iscoroutine(result):
                await result
            turn.abort()
        server.close()
        await server.wait_closed()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def waiting(client: socket.socket) -> int:
    """Bytes ``client`` can read now, without waiting."""
    try:
        return len(client.recv(1 << 20, socket.MSG_PEEK))
    except BlockingIOError:
        return 0


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_write_waits_for_the_next_or_the_turns_end(loop: str) -> None:
    async def test(turn: TurnWrites, client: socket.socket) -> None:
        turn.write(b"status line, ")
        time.sleep(0.05)  # the loop's turn goes on: nothing sent yet
        assert waiting(client) == 0
        assert turn.get_write_buffer_size() == len(b"status line, ")
        turn.write(b"body")  # sent with the write before it, in one segment
        until(lambda: waiting(client) == len(b"status line, body"))
        assert client.recv(100) == b"status line, body"
        assert data_segments_in(client) == 1
        # Alone in its turn: sent at the turn's end.
        turn.write(b"a head alone")
        time.sleep(0.05)
        assert waiting(client) == 0
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        until(lambda: waiting(client) == len(b"a head alone"))
        assert client.recv(100) == b"a head alone"
        # As large as the high-water mark: never held.
        turn.write(b"y" * HELD_AT_MOST)
        until(lambda: waiting(client) > 0)

    on_a_connection(LOOPS[loop], test)


async def read_to_the_end(client: socket.socket) -> bytes:
    """All ``client`` receives until the connection ends, the loop running."""
    received = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            chunk = client.recv(1 << 16)
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"still open after {received!r}")


@pytest.mark.parametrize("loop", list(LOOPS))
def test_close_sends_what_is_held_and_abort_drops_it(loop: str) -> None:
    async def close(turn: TurnWrites, client: socket.socket) -> None:
        turn.write(b"last words")
        turn.close()
        assert await read_to_the_end(client) == b"last words"

    async def abort(turn: TurnWrites, client: socket.socket) -> None:
        turn.write(b"never sent")
        turn.abort()
        assert await read_to_the_end(client) == b""

    on_a_connection(LOOPS[loop], close)
    on_a_connection(LOOPS[loop], abort)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_writes_held_when_the_connection_is_lost_are_dropped_quietly(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(turn: TurnWrites, client: socket.socket) -> None:
        for _ in range(10):  # asyncio warns after the fifth write lost
            turn.write(b"to nobody")
            client.close()
            await asyncio.sleep(0.01)
        assert turn.is_closing()

    on_a_connection(LOOPS[loop], test)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("request_line", [b"HEAD /x", b"GET /204"])
def test_a_client_that_half_closes_gets_its_answer(
    server: LiveServer, request_line: bytes
) -> None:
    """A request then the client's end of writing (``nc -N``, HTTP/1.0
    clients): uvicorn's transport closes itself on the EOF, in the turn
    that may also hold the answer's only write."""
    with connect(server.port) as sock:
        sock.sendall(request_line + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    assert received.startswith(b"HTTP/1.1 ")


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_held_buffer_is_sent_as_it_was_written(loop: str) -> None:
    async def test(turn: TurnWrites, client: socket.socket) -> None:
        buffer = bytearray(b"as written")
        turn.write(buffer)
        buffer[:] = b"reused now"  # its writer's to reuse once write returns
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        until(lambda: waiting(client) == len(b"as written"))
        assert client.recv(100) == b"as written"

    on_a_connection(LOOPS[loop], test)
