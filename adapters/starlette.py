"""Starlette (ASGI) adapter: routes to mount in a host app, or a whole app."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from jobstatus_core import ApiError, Reply, StatusService
from jobstatus_core.errors import route_not_found

from .routing import endpoint_paths

Answer = Callable[[str, bytes, float], Reply]


def status_routes(service: StatusService, prefix: str = "") -> list[BaseRoute]:
    """The two endpoints as routes, under ``prefix`` (e.g. ``"/jobs-api"``)."""
    job_path, jobs_path = endpoint_paths(prefix)
    return [
        Route(job_path, _Endpoint(service, service.job_status)),
        Route(jobs_path, _Endpoint(service, service.jobs_status)),
    ]


def create_app(service: StatusService, prefix: str = "") -> Starlette:
    """A standalone app serving only the two endpoints.

    Every other path answers ``404 Not found`` in the envelope too.
    """
    not_found = Route("/{path:path}", _Endpoint(service, None))
    return Starlette(routes=[*status_routes(service, prefix), not_found])


class _Endpoint:
    """One endpoint as a plain ASGI app.

    A class instance, not a function, so that ``Route`` passes every method
    through: Starlette would answer other methods itself in plain text, and
    the contract wants the JSON envelope for them too.
    """

    def __init__(self, service: StatusService, answer: Answer | None) -> None:
        self.service = service
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        service = self.service
        started = service.timer()
        path = request.url.path
        try:
            if self.answer is None:
                raise route_not_found()
            service.check_request(request.method, request.headers)
            body = await _read_body(request, service)
        except ApiError as err:
            return _response(service.error(path, err, started))
        # Store calls block (disk, sockets): keep them off the event loop.
        return _response(await run_in_threadpool(self.answer, path, body, started))


async def _read_body(request: Request, service: StatusService) -> bytes:
    """The body, refused as soon as it grows past the limit: never buffered whole."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > service.max_body:
            raise service.too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))
