"""The servers that bench/http/run.py measures, one per process.

    python bench/http/apps.py floor SIZE PORT
    python bench/http/apps.py wsgi-floor SIZE PORT
    python bench/http/apps.py jobstatus STORE_URL PORT asgi|wsgi FILL

``floor``: a bare Starlette endpoint on the same uvicorn that parses the JSON
body and returns a fixed body of SIZE bytes — the framework's floor.
``wsgi-floor``: the same as a bare WSGI function, under the gunicorn set-up
that ``jobstatus serve --interface wsgi`` uses — the WSGI server's floor.
``jobstatus``: the real app on a store prepared by run.py (``memory://`` is
filled here, in the serving process, from the same job plan).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KEY = "bench-key"


def fixed_body(size: int) -> bytes:
    return json.dumps({"pad": "x" * max(0, size - 10)}).encode()[:size]


def floor(size: int, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    body = fixed_body(size)

    async def endpoint(request: Request) -> Response:
        json.loads(await request.body())
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/floor", endpoint, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wsgi_floor(size: int, port: int) -> None:
    from jobstatus_adapters import wsgi_server
    from jobstatus_backends.memory import MemoryStore

    body = fixed_body(size)
    headers = [("content-type", "application/json"), ("content-length", str(size))]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        json.loads(environ["wsgi.input"].read(length))
        start_response("200 OK", headers)
        return [body]

    wsgi_server.run(MemoryStore, lambda _: app, host="127.0.0.1", port=port)  # type: ignore[arg-type, return-value]


def open_store(url: str, fill: int) -> Any:
    """Open the store; fill ``memory://``, which only this process can see."""
    from jobstatus_backends import store_from_url

    store = store_from_url(url)
    if url.startswith("memory:"):
        from stores import plan_jobs  # bench/stores.py

        for _, at, record in plan_jobs(fill, time.time()):
            store.put(record, at=at)
    return store


def jobstatus(url: str, port: int, interface: str, fill: int) -> None:
    from jobstatus_adapters import make_service

    if interface == "wsgi":
        from jobstatus_adapters import wsgi_server
        from jobstatus_adapters.wsgi import WSGIApp

        wsgi_server.run(
            lambda: open_store(url, fill),
            lambda opened: WSGIApp(make_service(opened, api_keys=[KEY])),
            host="127.0.0.1",
            port=port,
        )
        return
    import uvicorn

    from jobstatus_adapters.starlette import create_app

    service = make_service(open_store(url, fill), api_keys=[KEY])
    uvicorn.run(
        create_app(service),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        floor(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "wsgi-floor":
        wsgi_floor(int(sys.argv[2]), int(sys.argv[3]))
    else:
        jobstatus(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
