"""The dashboard: a page under ``/dashboard/`` that shows the jobs live.

The page holds no data, so it needs no key to load; it signs in from the
browser by exchanging an API key for a scoped token (``POST /v1/tokens``),
then reads everything through the API under ``api_prefix``.

Its redirect and the API base it is given are relative to the page's own
address, so the page works wherever the app is mounted (a host's ``Mount``,
uvicorn's ``--root-path``, a proxy that strips a prefix and says nothing).
"""

from __future__ import annotations

import html
from collections.abc import Collection
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstatus_core.config import DEFAULT_TERMINAL
from jobstatus_core.contract import normalized_prefix

#: The page's files (index.html, app.js, style.css), shipped in the wheel.
FILES = Path(__file__).parent / "dashboard"
DEFAULT_PATH = "/dashboard"

#: The page runs only its own script and talks only to its own origin: an
#: injected job id or record can never run as code or send a token away.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    # The feed's URL carries the token (EventSource cannot send headers).
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
)


def dashboard_routes(
    api_prefix: str = "",
    *,
    path: str = DEFAULT_PATH,
    terminal: Collection[str] = DEFAULT_TERMINAL,
) -> list[BaseRoute]:
    """The dashboard's routes, for a host to mount beside ``status_routes``.

    ``api_prefix`` is where the host mounted the API (the ``prefix`` given
    to ``status_routes``); ``terminal`` the statuses the chart counts as
    finished (the service's ``terminal``).
    """
    path = normalized_prefix(path)
    if not path:
        raise ValueError("the dashboard needs a path of its own, e.g. /dashboard")
    index = _index(_api_from_page(path, normalized_prefix(api_prefix)), terminal)
    # "./" keeps a last segment holding a colon from reading as a scheme.
    to_index = "./" + path.rsplit("/", 1)[1] + "/"

    async def page(request: Request) -> Response:
        return Response(index, media_type="text/html", headers=dict(SECURITY_HEADERS))

    async def to_page(request: Request) -> Response:
        # Relative: an absolute "/dashboard/" would drop the prefix the app
        # is mounted under, which only the browser's address holds for sure.
        return RedirectResponse(to_index)

    return [
        Route(path, to_page, methods=["GET", "HEAD"]),
        Route(path + "/", page, methods=["GET", "HEAD"]),
        # The page by its file's name too: the files' mount below would
        # serve its template, which names no API.
        Route(path + "/index.html", page, methods=["GET", "HEAD"]),
        Mount(path, _Secured(StaticFiles(directory=FILES))),
    ]


def _api_from_page(path: str, api_prefix: str) -> str:
    """The API's base relative to the page at ``path + "/"``: up to the
    app's root, one ``..`` per segment of ``path``, then ``api_prefix``.

    The browser resolves it against the page's address, which carries
    whatever prefix the app is mounted under; the ``..`` keep it a relative
    path, never a scheme or a host, whatever ``api_prefix`` holds.
    """
    return "/".join([".."] * path.count("/")) + api_prefix


def _index(api_base: str, terminal: Collection[str]) -> str:
    text = (FILES / "index.html").read_text(encoding="utf-8")
    return text.replace("{{api}}", html.escape(api_base)).replace(
        "{{terminal}}", html.escape(",".join(sorted(terminal)))
    )


class _Secured:
    """Adds ``SECURITY_HEADERS`` to every answer of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", []),
                    *(
                        (name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in SECURITY_HEADERS
                    ),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)
