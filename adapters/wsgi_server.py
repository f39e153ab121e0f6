"""``jobstatus serve --interface wsgi``: the WSGI adapter under waitress.

waitress reads every request whole on one asynchronous loop and hands a
thread only a request that has fully arrived, so clients that send their
headers a line at a time hold a socket each, not a thread: a few of them
cannot stop the server answering everyone else (gunicorn's gthread worker
reads headers on its threads, and 8 such clients stopped it).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from types import FrameType
from typing import Any

from jobstatus_core import ApiError, ConfigError, Store

from .serverstack import settle_heap
from .wsgi import DEFAULT_WSGI_WAITERS, WSGIApp

#: Threads per worker: status requests are short and mostly wait on I/O.
#: Threads per worker: requests served at once, plus one per wait the WSGI
#: app may hold (each wait holds its thread until it is answered).
THREADS = 8 + DEFAULT_WSGI_WAITERS
#: Open connections per worker; slow clients past it wait to be accepted.
CONNECTION_LIMIT = 10_000
#: File descriptors kept for what is not a client connection: the store's
#: files and sockets, waitress' own, logs.
RESERVED_FDS = 256
BACKLOG = 2048


def require_server() -> Any:
    """waitress' ``create_server``, or the one-line fix when it is missing."""
    try:
        from waitress.server import create_server
    except ImportError:
        raise ConfigError(
            "--interface wsgi needs waitress: pip install waitress"
            " (the package's 'wsgi' extra)"
        ) from None
    return create_server


def run(
    open_store: Callable[[], Store],
    build_app: Callable[[Store], WSGIApp],
    *,
    host: str,
    port: int,
    workers: int = 1,
) -> None:
    """Serve until SIGTERM or SIGINT.

    One worker serves in this process. More are forked over one listening
    socket (waitress has no process model of its own); each opens its own
    store after the fork, because neither watchdog's threads nor an SQLite
    connection survive one.
    """
    require_server()
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if workers > 1 and not hasattr(os, "fork"):
        raise ConfigError("several workers need os.fork; run one per process")
    sock = socket.create_server((host, port), backlog=BACKLOG)
    try:
        if workers == 1:
            _serve(sock, open_store, build_app)
        else:
            _supervise(workers, lambda: _serve(sock, open_store, build_app))
    finally:
        sock.close()


def _serve(
    sock: socket.socket,
    open_store: Callable[[], Store],
    build_app: Callable[[Store], WSGIApp],
) -> None:
    """One worker: its own store, app and waitress server, until stopped."""
    create_server = require_server()
    store = open_store()
    try:
        app = build_app(store)
        options: dict[str, Any] = {
            "sockets": [sock],
            "threads": THREADS,
            "connection_limit": _connection_limit(),
            # select() stops at 1,024 descriptors; poll() has no such limit.
            "asyncore_use_poll": True,
            "backlog": BACKLOG,
        }
        if isinstance(app, WSGIApp):
            # waitress buffers a body before the app sees it: cap that near
            # the app's own limit, which stays the one that answers.
            options["max_request_body_size"] = 2 * app.service.max_body
        server = create_server(app, **options)
        if isinstance(app, WSGIApp):
            server.channel_class = _envelope_channel(app)
        settle_heap()
        with _stop_on(signal.SIGTERM):
            server.run()  # returns on SystemExit or KeyboardInterrupt
    finally:
        store.close()


def _connection_limit() -> int:
    """``CONNECTION_LIMIT``, raising this process' descriptor limit towards it."""
    try:
        import resource
    except ImportError:  # not on Windows: keep waitress' own limit there
        return 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CONNECTION_LIMIT + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY:
        return CONNECTION_LIMIT
    return max(1, min(CONNECTION_LIMIT, soft - RESERVED_FDS))


@contextmanager
def _stop_on(signum: int) -> Iterator[None]:
    """Turn ``signum`` into SystemExit, which stops waitress' loop cleanly."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    previous = signal.signal(signum, stop)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _supervise(workers: int, serve: Callable[[], None]) -> None:
    """Fork ``workers`` processes running ``serve``; replace any that dies;
    on SIGTERM or SIGINT, stop them all and return."""
    children: set[int] = set()
    stopping = False

    def start() -> None:
        pid = os.fork()
        if pid == 0:  # the worker: serve, and never return into the parent's code
            code = 0
            try:
                # The parent's handlers would signal this worker's siblings.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                serve()
            except BaseException:
                logging.getLogger("jobstatus").exception("a WSGI worker failed")
                code = 1
            finally:
                os._exit(code)
        children.add(pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    for _ in range(workers):
        start()
    previous = {
        sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while children:
            pid, _status = os.wait()
            children.discard(pid)
            if not stopping:
                time.sleep(1)  # a worker that dies at once must not spin the CPU
                if not stopping:
                    start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _envelope_channel(app: WSGIApp) -> Any:
    """A waitress channel whose own refusals (a body over the limit, a
    malformed request, the app failing) answer in the JSON envelope."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    service = app.service

    class EnvelopeErrorTask(ErrorTask):  # type: ignore[misc]
        def execute(self) -> None:
            error = self.request.error
            if error.code == 413:
                refusal = service.too_large()
            else:
                detail = f": {error.body}" if error.body else ""
                refusal = ApiError(error.code, f"{error.reason}{detail}")
            # A request refused in its first line or headers has no path:
            # waitress sets the attribute only once it has parsed one.
            path = getattr(self.request, "path", None) or "/"
            reply = service.error(path, refusal, service.timer())
            self.status = f"{reply.status} {HTTPStatus(reply.status).phrase}"
            self.response_headers.extend(reply.headers)
            self.set_close_on_finish()
            self.content_length = len(reply.body)
            self.write(reply.body)

    class EnvelopeChannel(HTTPChannel):  # type: ignore[misc]
        error_task_class = EnvelopeErrorTask

        def send_continue(self) -> None:
            # waitress sends "100 Continue" to a request whose headers it
            # has already refused (a Content-Length over its limit), then
            # reads the body it invited: the refusal is the answer instead.
            if self.request.error is not None:
                self.request.expect_continue = False
                return
            super().send_continue()

    return EnvelopeChannel
