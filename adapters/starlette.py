"""Starlette (ASGI) adapter: routes to mount in a host app, or a whole app."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstatus_core import (
    ApiError,
    AsyncReads,
    Inline,
    Reply,
    StatusService,
    TriesInline,
    WouldBlock,
    knobs,
    nowait,
)
from jobstatus_core import feed as feeds
from jobstatus_core.config import checked_origins
from jobstatus_core.contract import (
    OPERATIONS,
    OneRead,
    Operation,
    Router,
    normalized_prefix,
)
from jobstatus_core.feed import Feed
from jobstatus_core.problems import method_not_allowed, route_not_found
from jobstatus_core.requests import Asked, Request
from jobstatus_core.waiting import Waiting, finish

from .changes import changes_for
from .cors import asgi_cors
from .eventstream import HEARTBEAT, EventStream
from .logconfig import guard_access_logs
from .metrics import UNMATCHED, Metrics
from .offload import StoreThreads
from .routing import origin_path, query_of

T = TypeVar("T")
F = TypeVar("F")
#: A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT_SECONDS = 15.0
#: Round trips one store call may await on the loop (a Redis mark, then its
#: window) before the rest of it goes to a thread.
MAX_FETCHES = 4


def status_routes(service: StatusService, prefix: str = "") -> list[BaseRoute]:
    """Every endpoint of the contract, as routes under ``prefix`` (e.g.
    ``"/jobs-api"``): one route per path of the contract table."""
    prefix = normalized_prefix(prefix)
    threads = StoreThreads()
    guard_access_logs()
    return [
        Route(prefix + path, _Endpoint(service, methods, threads))
        for path, methods in Router(OPERATIONS).methods.items()
    ]


def create_app(
    service: StatusService,
    prefix: str = "",
    *,
    cors_origins: Sequence[str] = (),
    dashboard: bool = True,
) -> ASGIApp:
    """A standalone ASGI app serving the endpoints of the contract, with
    ``GET /metrics`` counting its requests, CORS for ``cors_origins``, and
    the dashboard under ``/dashboard/`` unless ``dashboard`` is False.

    Every other path answers ``404 Not found`` in the envelope too, and an
    absolute-form target (``POST http://host/v1/...``) is routed by its path.
    """
    origins = checked_origins("cors_origins", knobs.texts("cors_origins", cors_origins))
    pages: list[BaseRoute] = []
    if dashboard:
        from .dashboard import dashboard_routes

        pages = dashboard_routes(prefix, terminal=service.terminal)
    return asgi_cors(StatusApp(service, prefix, pages), origins)


class StatusApp:
    """The app ``create_app`` builds: the contract's endpoints routed
    straight from its table, everything else (the dashboard, our own 404,
    lifespan) through a Starlette app.

    A status poll is small: Starlette's middleware layers and its route
    list, walked per request, cost about a quarter of one on uvloop
    (docs/performance.md), and a broadcast to 1,000 streams pays its send
    wrappers 1,000 times. Each request is counted here, once.
    """

    def __init__(
        self, service: StatusService, prefix: str, pages: Sequence[BaseRoute]
    ) -> None:
        self.router = Router(OPERATIONS, prefix)
        #: The store threads every endpoint shares.
        self.threads = StoreThreads()
        self.metrics = Metrics.of(service)
        guard_access_logs()
        self.endpoints = {
            path: _Endpoint(service, methods, self.threads, self.metrics)
            for path, methods in self.router.methods.items()
        }
        self.not_found = _Endpoint(service, {}, None, self.metrics)
        self.fallback = Starlette(
            routes=[*pages, Route("/{path:path}", self.not_found)],
            exception_handlers={HTTPException: functools.partial(_refused, service)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        path = scope["path"]
        if not path.startswith("/"):
            # uvicorn's h11 protocol hands an absolute-form target
            # (``http://host/v1/...``, which RFC 9112 §3.2.2 says servers
            # accept) through whole as the path, and ``*`` as is.
            origin = origin_path(path)
            if origin is not None:
                scope = {**scope, "path": origin, "raw_path": origin.encode("latin-1")}
                path = origin
        if not path.startswith("/") or "\n" in path:
            # No path (``*``), or one Starlette's catch-all route would not
            # match (it stops at a line end): our 404, not its plain text.
            answering = self.not_found.answer(scope, receive, send)
            await self._count(UNMATCHED, answering)
            return
        found = self.router.find(_route_path(path, scope.get("root_path", "")))
        if found is None:
            await self._count(UNMATCHED, self._fallback(scope, receive, send))
            return
        template, scope["path_params"] = found
        operation = self.router.methods[template].get(scope["method"])
        name = UNMATCHED if operation is None else operation.name
        await self._count(name, self.endpoints[template].answer(scope, receive, send))

    async def _count(self, name: str, answering: Awaitable[int | None]) -> None:
        metrics = self.metrics
        code: int | None = None
        started = metrics.start()
        try:
            code = await answering
        finally:
            # Nothing sent (the client went away first, or a failure): 500.
            metrics.done(name, code or 500, started)

    async def _fallback(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        code: int | None = None

        async def counted(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        await self.fallback(scope, receive, counted)
        return code


class _Endpoint:
    """One endpoint as a plain ASGI app.

    A class instance, not a function, so that ``Route`` passes every method
    through: Starlette would answer other methods itself in plain text, and
    the contract wants the JSON envelope for them too. It speaks ASGI
    directly, without Request and Response objects: a status poll is small,
    and their set-up was a measurable part of it.
    """

    def __init__(
        self,
        service: StatusService,
        methods: dict[str, Operation],
        threads: StoreThreads | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.service = service
        #: Counts the open waits and streams; None under ``status_routes``,
        #: which counts nothing (a host app's own metrics do).
        self.metrics = metrics
        #: The operations of this path by method; none: the catch-all 404.
        self.methods = methods
        self.allowed = tuple(methods)
        # Store calls block (disk, sockets): keep them off the event loop,
        # unless the store says it never waits (memory://), where the thread
        # hop would cost more than the call, or that it can try a read
        # without waiting (the indexed file store, SQLite): tried here first, on a
        # thread only when it would wait.
        self.threads = None if isinstance(service.store, Inline) else threads
        self.tries_inline = isinstance(service.store, TriesInline)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Answers the request: the status code sent, None when nothing was
        (the client went away first)."""
        service = self.service
        started = service.timer()
        path = scope["path"]
        method = scope["method"]
        try:
            # Starlette's route patterns end in "$", which matches before a
            # final newline: "/v1/jobs\n" is no path of ours.
            if not self.methods or "\n" in path:
                raise route_not_found()
            operation = self.methods.get(method)
            if operation is None:
                raise method_not_allowed(method, self.allowed)
            headers = _headers(scope)
            query = query_of(scope["query_string"].decode("latin-1"))
            grant = service.check_request(operation, headers, query)
            body = b""
            if operation.reads_body:
                body = await _read_body(receive, service)
                service.check_body(headers, body)
        except ApiError as err:
            return await _send(send, service.error(path, err, started), method)
        except _Disconnected:
            return None
        request = Request(
            path,
            method,
            headers,
            body,
            query,
            scope.get("path_params", {}),
            started,
            grant,
            parser=service.parse_body,
        )
        # Taken before the first read: a change after it wakes the wait.
        generation = changes_for(service).generation if operation.waits else 0
        try:
            answer = await self._call(operation, request)
        except Exception as exc:  # past ``handle`` (a read awaited on the loop)
            answer = service.unexpected(operation, request, exc)
        if isinstance(answer, Feed):
            try:
                with self._open(operation):
                    return await self._stream(answer, scope, receive, send)
            except ApiError as err:
                return await _send(send, service.error(path, err, started), method)
        if isinstance(answer, Waiting):
            try:
                with self._open(operation):
                    reply = await self._wait(
                        operation, request, answer, receive, generation
                    )
            except ApiError as err:
                reply = service.error(path, err, started)
            except _Disconnected:
                return None
        else:
            reply = answer
        return await _send(send, reply, method)

    def _open(self, operation: Operation) -> AbstractContextManager[None]:
        """A wait or a stream, counted in progress (``Metrics.open``)."""
        if self.metrics is None:
            return contextlib.nullcontext()
        return self.metrics.open(operation.name)

    async def _call(
        self, operation: Operation, request: Request
    ) -> Reply | Waiting | Feed:
        service = self.service
        store = service.async_reads
        one_read = operation.one_read
        if one_read is not None and store is not None and _on_asyncio():
            asked = one_read.ask(service, request)
            if isinstance(asked, Reply):
                return asked
            if asked is not None:
                answer = await self._from_one_read(operation, one_read, store, asked)
                if answer is not None:
                    return answer
        return await self._run(lambda: service.handle(operation, request))

    async def _from_one_read(
        self,
        operation: Operation,
        one_read: OneRead[Asked[F], F],
        store: AsyncReads,
        asked: Asked[F],
    ) -> Reply | Waiting | Feed | None:
        """The answer from one store read awaited on the loop
        (``OneRead``): the request read once, the store once, the answer
        made once. When that read does not answer it, the handler does,
        given what was read (``for_handler``). None when the store refused
        the read and there are no store threads: the handler then tries."""
        service = self.service
        try:
            found = await asked.read(store)
        except WouldBlock:
            if self.threads is None:
                return None
            # What a store's refusal on the loop leads to (a layout to
            # check, a connection lost): the sync client, on a thread.
            request = asked.request
            return await self.threads.run(lambda: service.handle(operation, request))
        except Exception as exc:  # the store's failure, answered as the handler does
            return one_read.answer(service, asked, exc)
        answer = one_read.answer(service, asked, found)
        if answer is None:
            request = asked.for_handler(found)
            return await self._run(lambda: service.handle(operation, request))
        return answer

    async def _run(self, call: Callable[[], T]) -> T:
        # Every call made here reads (no HTTP operation writes to the
        # store), so one refused inline is safe to run again on a thread.
        if self.threads is None:
            return call()
        if self.tries_inline:
            fetched: dict[Hashable, nowait.Outcome] = {}
            while True:
                try:
                    with nowait.attempt(fetched):
                        return call()
                except WouldBlock as exc:
                    if (
                        exc.fetch is None
                        or exc.key in fetched
                        or len(fetched) == MAX_FETCHES
                        or not _on_asyncio()
                    ):
                        break
                    try:
                        fetched[exc.key] = (True, await exc.fetch())
                    except Exception as error:  # the store maps it, tried again
                        fetched[exc.key] = (False, error)
        return await self.threads.run(call)

    async def _stream(
        self, feed: Feed, scope: Scope, receive: Receive, send: Send
    ) -> int:
        """Server-sent events until the client goes, the server stops, or a
        per-job stream's job ends. No thread is held between events."""
        service = self.service
        hub = changes_for(service)
        with hub.waiter(service.max_streams, "open streams"):
            # Read before the head is sent, so that a failure is answered
            # as one.
            if feed.after is None:
                first = await self._run(lambda: feeds.snapshot(service, feed))
            else:
                first = feeds.Step((), feeds.READY, feed.after, False)
            async with EventStream(receive, send) as stream:
                await stream.start()
                await stream.write(first.wire, last=first.ended)
                if not first.ended:
                    await self._follow(feed, first.position, stream)
        return 200

    async def _follow(self, feed: Feed, position: int, stream: EventStream) -> None:
        """Each change after ``position`` as it happens, a heartbeat when
        there is none for a while; ends the body when the stream is over."""
        service = self.service
        hub = changes_for(service)
        now = service.timer()
        ends = now + service.stream_seconds if service.stream_seconds else None
        if feed.expires_at is not None:
            expiry = now + max(0.0, feed.expires_at - service.clock())
            ends = expiry if ends is None else min(ends, expiry)
        beat = now + HEARTBEAT_SECONDS
        seen = None  # what the hub's look that woke it read
        while not hub.closing:
            if stream.gone.done():
                return  # nobody to end the body for
            step: feeds.Step | None = None
            generation: int
            if seen is not None:
                step = feeds.changes_found(service, feed, position, seen)
                generation = seen.generation  # read as of that look
                # Not held while a slow client takes the bytes: the look's
                # rows and shared events are every stream's.
                seen = None
            if step is None:
                generation = hub.generation
                try:
                    step = await self._run(
                        functools.partial(feeds.changes, service, feed, position)
                    )
                except ApiError:
                    break  # after the head, an error can only end the stream
            position = step.position
            now = service.timer()
            if step.ended or (ends is not None and now >= ends):
                # The last events and the body's end in one write; a client
                # resumes after the last event's id.
                await stream.write(step.wire, last=True)
                return
            if step.wire:
                await stream.write(step.wire)
                beat = now + HEARTBEAT_SECONDS
            elif now >= beat:
                await stream.write(HEARTBEAT)
                beat = now + HEARTBEAT_SECONDS
            if len(step.events) < feeds.BATCH:
                left = beat - now if ends is None else min(beat, ends) - now
                seen = await hub.wait(
                    generation, feed.interest, left, until=stream.gone
                )
        await stream.write(b"", last=True)

    async def _wait(
        self,
        operation: Operation,
        request: Request,
        answer: Reply | Waiting,
        receive: Receive,
        generation: int,
    ) -> Reply:
        """Ask again after each change (``generation``: the hub's when the
        answer was read) until the handler answers; a client that goes away
        frees its place at once."""
        service = self.service
        hub = changes_for(service)
        with hub.waiter(service.max_waiters, "waiters"):
            gone = asyncio.ensure_future(_disconnect(receive))
            try:
                while isinstance(answer, Waiting):
                    woken = asyncio.ensure_future(
                        hub.wait(
                            generation,
                            answer.interest,
                            answer.deadline - service.timer(),
                        )
                    )
                    await asyncio.wait(
                        {woken, gone}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if gone.done():
                        woken.cancel()
                        raise _Disconnected
                    if hub.closing or service.timer() >= answer.deadline:
                        answer = finish(answer)
                    generation = hub.generation
                    again = await self._call(
                        operation, replace(request, waiting=answer)
                    )
                    assert not isinstance(again, Feed)  # a wait never streams
                    answer = again
            finally:
                gone.cancel()
        return answer


def _route_path(path: str, root_path: str) -> str:
    """The path below the app's mount point, as Starlette's router reads it:
    uvicorn's ``--root-path`` and a host's ``Mount`` keep it in ``path``
    and name it in ``root_path``."""
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if not rest or rest.startswith("/"):
            return rest
    return path


def _on_asyncio() -> bool:
    """Whether this runs on an asyncio loop, where a store's fetches (asyncio
    coroutines) can be awaited; under trio the call goes to a thread.
    Starlette runs on one or the other (anyio), and trio is the one asked:
    asyncio's ``get_running_loop()`` makes a ``getpid()`` system call on
    Python 3.11, a cost per request whose read is fetched on the loop. Asked
    for the current trio *task* (every trio version has it): in trio's guest
    mode the asyncio host's own tasks run while a trio run is on."""
    trio = sys.modules.get("trio")
    if trio is None:
        return True
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # not in a trio task
        return True
    return False


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by (lower-case) name; a field sent twice is joined by
    ", ", as WSGI servers join it, so both adapters see the same."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


class _Disconnected(Exception):
    """The client went away before its body was read: nobody to answer."""


async def _disconnect(receive: Receive) -> None:
    """Returns when the client goes away (its body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Receive, service: StatusService) -> bytes:
    """The body, refused as soon as it grows past the limit: never buffered whole."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > service.max_body:
            raise service.too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


#: Replies' headers as ASGI sends them, made once per set: most answers
#: share one (``content-type``), a polled job's its ETag's. At most
#: ``ENCODED_HEADERS`` sets; the table starts over when full.
ENCODED_HEADERS = 1024
_encoded_headers: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}


async def _refused(
    service: StatusService, request: StarletteRequest, exc: Exception
) -> Response:
    """A refusal of the pages' routes (the dashboard's 404 and 405, raised
    by Starlette) in the envelope, as every other path's."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        # The pages answer GET and HEAD (StaticFiles names no Allow).
        listed = (exc.headers or {}).get("Allow", "GET, HEAD")
        allowed = tuple(name.strip() for name in listed.split(",") if name.strip())
        error = method_not_allowed(request.method, allowed)
    else:
        error = route_not_found()
    reply = service.error(request.scope["path"], error, service.timer())
    return Response(reply.body, reply.status, headers=dict(reply.headers))


async def _send(send: Send, reply: Reply, method: str) -> int:
    """Sends ``reply``; to a HEAD, its head alone (the Content-Length of
    the body a GET gets, RFC 9110 §8.6)."""
    encoded = _encoded_headers.get(reply.headers)
    if encoded is None:
        encoded = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in reply.headers
        ]
        if len(_encoded_headers) >= ENCODED_HEADERS:
            _encoded_headers.clear()
        _encoded_headers[reply.headers] = encoded
    # No length on a 204 (RFC 9110 §8.6: a resumed per-job stream's end).
    headers = (
        encoded
        if reply.status == 204
        else [*encoded, (b"content-length", b"%d" % len(reply.body))]
    )
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": headers}
    )
    body = b"" if method == "HEAD" else reply.body
    await send({"type": "http.response.body", "body": body})
    return reply.status
