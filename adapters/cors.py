"""CORS for both adapters (SPEC §15): off unless origins are configured.

ASGI uses Starlette's ``CORSMiddleware``; the WSGI app gets the small
equivalent below, with the same answers: a preflight from a listed origin,
for an allowed method and headers, is ``200 OK`` with the CORS headers; any
other preflight is ``400 Disallowed CORS …`` without them; a request from an
origin not listed gets no CORS header at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .wsgi import Environ, StartResponse, WSGIApplication

ALLOW_METHODS = ("GET", "POST")
# last-event-id: a fetch-based event-stream client (one that sends a
# token as Authorization) resumes with it; EventSource sends it unasked.
ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "if-none-match",
    "last-event-id",
    "x-api-key",
)
EXPOSE_HEADERS = ("allow", "etag", "last-modified", "retry-after")
MAX_AGE = 600
#: What a browser may send without asking (the Fetch standard's safelist).
_SAFELISTED = ("accept", "accept-language", "content-language")
_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def asgi_cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """``app`` behind Starlette's CORSMiddleware for ``origins``; ``app``
    itself when there are none."""
    if not origins:
        return app
    cors = CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=MAX_AGE,
    )
    listed = frozenset(origins)

    async def listed_only(scope: Scope, receive: Receive, send: Send) -> None:
        # The middleware adds its Access-Control-Expose-Headers to the
        # answers of every origin, listed or not: an ordinary request from
        # one not listed goes past it, answered without any CORS header.
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            preflight = scope["method"] == "OPTIONS" and (
                "access-control-request-method" in headers
            )
            if origin is not None and origin not in listed and not preflight:
                await app(scope, receive, send)
                return
        await cors(scope, receive, send)

    return listed_only


class WSGICors:
    """The WSGI equivalent of Starlette's CORSMiddleware, as configured above."""

    def __init__(self, app: WSGIApplication, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.allowed_headers = frozenset((*ALLOW_HEADERS, *_SAFELISTED))

    def __call__(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return self.app(environ, start_response)
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        if environ.get("REQUEST_METHOD") == "OPTIONS" and requested is not None:
            return self._preflight(environ, origin, requested, start_response)
        if origin not in self.origins:
            return self.app(environ, start_response)

        def with_cors(
            status: str, headers: list[tuple[str, str]], *exc_info: object
        ) -> object:
            headers = [
                *headers,
                ("access-control-allow-origin", origin),
                ("access-control-expose-headers", ", ".join(EXPOSE_HEADERS)),
                ("vary", "Origin"),
            ]
            return start_response(status, headers, *exc_info)

        return self.app(environ, with_cors)  # type: ignore[arg-type]

    def _preflight(
        self,
        environ: Environ,
        origin: str,
        method: str,
        start_response: StartResponse,
    ) -> list[bytes]:
        headers = [
            ("vary", _VARY),
            ("access-control-allow-methods", ", ".join(ALLOW_METHODS)),
            ("access-control-max-age", str(MAX_AGE)),
            (
                "access-control-allow-headers",
                ", ".join(sorted(self.allowed_headers)),
            ),
        ]
        failures = []
        if origin in self.origins:
            headers.append(("access-control-allow-origin", origin))
        else:
            failures.append("origin")
        if method not in ALLOW_METHODS:
            failures.append("method")
        asked = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
        if asked is not None and any(
            name.strip().lower() not in self.allowed_headers
            for name in asked.split(",")
        ):
            failures.append("headers")
        if failures:
            body = ("Disallowed CORS " + ", ".join(failures)).encode()
            status = "400 Bad Request"
        else:
            body, status = b"OK", "200 OK"
        headers += [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
        ]
        start_response(status, headers)
        return [body]
