"""WSGI (PEP 3333) adapter, on the standard library alone.

``WSGIApp(service)`` serves every endpoint of the contract table; give it the
host's own WSGI app as ``fallback`` and every other path goes there, which is
how a Flask or Django app mounts them next to its own routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from http import HTTPStatus
from typing import Any, Protocol

from jobstatus_core import ApiError, Reply, StatusService, knobs
from jobstatus_core.config import checked_origins
from jobstatus_core.contract import OPERATIONS, Match, Operation, Router
from jobstatus_core.feed import Feed
from jobstatus_core.problems import method_not_allowed, route_not_found
from jobstatus_core.requests import Request
from jobstatus_core.validation import content_length
from jobstatus_core.waiting import Waiting, finish

from .changes import changes_for
from .cors import WSGICors
from .logconfig import guard_access_logs
from .metrics import Metrics, WSGIMetrics
from .routing import origin_path, query_of

Environ = dict[str, Any]
ExcInfo = Any


class StartResponse(Protocol):
    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo = ...,
        /,
    ) -> Callable[[bytes], object]: ...


WSGIApplication = Callable[[Environ, StartResponse], Iterable[bytes]]

READ_CHUNK = 1 << 16
#: Waits a WSGI app holds at once by default: each holds a server thread.
DEFAULT_WSGI_WAITERS = 16


class WSGIApp:
    def __init__(
        self,
        service: StatusService,
        prefix: str = "",
        fallback: WSGIApplication | None = None,
        *,
        max_waiters: int = DEFAULT_WSGI_WAITERS,
        cors_origins: Sequence[str] = (),
    ) -> None:
        origins = checked_origins(
            "cors_origins", knobs.texts("cors_origins", cors_origins)
        )
        self.service = service
        self.fallback = fallback
        #: Each wait holds a server thread: at most this many at once (and
        #: never more than the service's own bound).
        self.max_waiters = min(
            knobs.count("max_waiters", max_waiters), service.max_waiters
        )
        self.router = Router(OPERATIONS, prefix)
        # Metrics and CORS wrap this app's own answers, never the fallback's.
        self.metrics = Metrics.of(service)
        guard_access_logs()
        own: WSGIApplication = WSGIMetrics(self._answer, self.metrics, self.router)
        self._own = WSGICors(own, origins) if origins else own

    def __call__(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        if self.fallback is not None and self._route(environ) is None:
            return self.fallback(environ, start_response)
        return self._own(environ, start_response)

    def _route(self, environ: Environ) -> Match | tuple[str, ...] | None:
        # Servers that pass an absolute-form target whole (wsgiref) are read
        # by its path; "*" (OPTIONS *) names no endpoint.
        if environ.get("REQUEST_URI", "").startswith("//"):
            # waitress strips a path's leading slashes (it serves
            # "//metrics" as "/metrics"): such a path is none of ours, as on
            # ASGI, so that a proxy's rule for a prefix cannot be stepped by.
            return None
        path = origin_path(_path_info(environ) or "/")
        method = environ.get("REQUEST_METHOD", "")
        return None if path is None else self.router.match(method, path)

    def _answer(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        service = self.service
        started = service.timer()
        target = _path_info(environ) or "/"
        method = environ.get("REQUEST_METHOD", "")
        path = origin_path(target)
        found = self._route(environ)
        # Mounted under a dispatcher, the client's path is SCRIPT_NAME + PATH_INFO.
        endpoint = _text(environ.get("SCRIPT_NAME", "")) + (path or target)
        try:
            if found is None:
                raise route_not_found()
            if not isinstance(found, Match):
                raise method_not_allowed(method, found)
            operation = found.operation
            headers = _headers(environ)
            query = query_of(environ.get("QUERY_STRING", ""))
            # The key first, as on every other path: a stranger learns
            # nothing of the server, not even that it is WSGI.
            grant = service.check_request(operation, headers, query)
            if operation.streams:
                raise ApiError(
                    501, "Not implemented: event streams need the ASGI adapter"
                )
            body = b""
            if operation.reads_body:
                body = _read_body(environ, headers, service)
                service.check_body(headers, body)
        except ApiError as err:
            refusal = service.error(endpoint, err, started)
            return _respond(refusal, start_response, head=method == "HEAD")
        request = Request(
            endpoint,
            method,
            headers,
            body,
            query,
            found.path_params,
            started,
            grant,
            parser=service.parse_body,
        )
        # Taken before the first read: a change after it wakes the wait.
        generation = changes_for(service).generation if operation.waits else 0
        answer = service.handle(operation, request)
        assert not isinstance(answer, Feed)  # refused above: streams need ASGI
        if isinstance(answer, Waiting):
            if not environ.get("wsgi.multithread", True):
                # One thread serves every request (gunicorn's sync worker):
                # holding it would stop the host's own routes for the whole
                # wait. An early answer is the contract's (SPEC §10: best
                # effort, clients loop); a 503 would fail every wait.
                answer = self._now(operation, request, answer)
            else:
                try:
                    with self.metrics.open(operation.name):
                        answer = self._wait(operation, request, answer, generation)
                except ApiError as err:
                    answer = service.error(endpoint, err, started)
        return _respond(answer, start_response, head=method == "HEAD")

    def _now(self, operation: Operation, request: Request, answer: Waiting) -> Reply:
        """A wait's answer as things stand, without holding the thread."""
        reply = self.service.handle(operation, replace(request, waiting=finish(answer)))
        assert isinstance(reply, Reply)  # a wait whose time is up is answered
        return reply

    def _wait(
        self, operation: Operation, request: Request, answer: Waiting, generation: int
    ) -> Reply:
        """Ask again after each change (``generation``: the hub's when the
        answer was read): a thread each, so bounded by ``max_waiters`` (keep
        it below the server's thread count)."""
        service = self.service
        hub = changes_for(service)
        result: Reply | Waiting = answer
        with hub.waiter(self.max_waiters, "waiters"):
            while isinstance(result, Waiting):
                hub.wait_blocking(
                    generation, result.interest, result.deadline - service.timer()
                )
                if hub.closing or service.timer() >= result.deadline:
                    result = finish(result)
                generation = hub.generation
                again = service.handle(operation, replace(request, waiting=result))
                assert not isinstance(again, Feed)  # a wait never streams
                result = again
        return result


def _text(native: str) -> str:
    """A PEP 3333 path string (the URL's bytes, each one a latin-1
    character) as the text the client meant: UTF-8, an invalid byte as
    U+FFFD, as uvicorn decodes the ASGI path, so both adapters agree."""
    try:
        raw = native.encode("latin-1")
    except UnicodeEncodeError:
        return native  # not bytes as PEP 3333 says: text already
    return raw.decode("utf-8", "replace")


def _path_info(environ: Environ) -> str:
    return _text(environ.get("PATH_INFO", ""))


def _headers(environ: Environ) -> dict[str, str]:
    """Request headers by lower-case name, as the core expects them."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _read_body(
    environ: Environ, headers: dict[str, str], service: StatusService
) -> bytes:
    """The body, refused as soon as it grows past the limit: never buffered whole."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    # check_request has refused a bad length, or one over the limit, already.
    length = content_length(headers)
    if length is not None:
        remaining = length
    elif environ.get("wsgi.input_terminated"):
        # A chunked upload the server ends for us: read up to one past the limit.
        remaining = service.max_body + 1
    elif "transfer-encoding" in headers:
        # A body is coming, but neither a length nor the server (wsgiref,
        # Django's runserver) says where it ends (PEP 3333: reading past it
        # may block): answering for an empty body would serve the wrong
        # request.
        raise ApiError(
            411,
            "Length required: this server cannot read a chunked body;"
            " send Content-Length",
        )
    else:
        return b""  # neither a length nor a Transfer-Encoding: no body
    chunks: list[bytes] = []
    size = 0
    while remaining > 0:
        chunk = stream.read(min(READ_CHUNK, remaining))
        if not chunk:
            break
        size += len(chunk)
        remaining -= len(chunk)
        if size > service.max_body:
            raise service.too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _respond(
    reply: Reply, start_response: StartResponse, *, head: bool = False
) -> list[bytes]:
    status = f"{reply.status} {HTTPStatus(reply.status).phrase}"
    headers = [*reply.headers, ("content-length", str(len(reply.body)))]
    start_response(status, headers)
    # A HEAD answer ends with its head (RFC 9110 §9.3.2): waitress sends what
    # it is given, and a client would read the bytes as the next answer.
    return [] if head else [reply.body]
