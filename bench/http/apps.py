"""The servers that bench/http/run.py measures, one per process.

    python bench/http/apps.py floor SIZE PORT
    python bench/http/apps.py wsgi-floor SIZE PORT
    python bench/http/apps.py jobstatus STORE_URL PORT asgi|wsgi FILL [WORKERS]

``floor``: a bare Starlette endpoint on the same uvicorn (the same loop and
HTTP parser ``jobstatus serve`` picks) that parses the JSON body of a POST and
returns a fixed body of SIZE bytes, to a POST or a GET — the framework's floor.
``wsgi-floor``: the same as a bare WSGI function, under the gunicorn set-up
that ``jobstatus serve --interface wsgi`` uses — the WSGI server's floor.
``jobstatus``: the real app on a store prepared by run.py (``memory://`` is
filled here, in the serving process, from the same job plan). With WORKERS
over 1 it is served as ``jobstatus serve --workers N`` serves it
(``listen.run_workers``): uvicorn spawning N workers, each on a listening
socket of its own, each building the app from a factory (here, each filling
its own ``memory://``).
"""

from __future__ import annotations

import json
import os
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

    from jobstatus_adapters.serverstack import server_stack

    body = fixed_body(size)

    async def endpoint(request: Request) -> Response:
        if request.method == "POST":
            json.loads(await request.body())
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/floor", endpoint, methods=["GET", "POST"])])
    settle_heap()  # the floor is served as jobstatus is
    stack = server_stack()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop=stack.loop,
        http=uvicorn_http(stack),
    )


def uvicorn_http(stack: Any) -> Any:
    """uvicorn's ``http`` setting for ``stack``: its protocol; code from
    before ``ServerStack.protocol`` (a run.py --baseline) ran uvicorn's own."""
    return stack.protocol() if hasattr(stack, "protocol") else stack.http


def wsgi_floor(size: int, port: int) -> None:
    from jobstatus_adapters import wsgi_server
    from jobstatus_backends.memory import MemoryStore

    body = fixed_body(size)
    headers = [("content-type", "application/json"), ("content-length", str(size))]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
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


def jobstatus(url: str, port: int, interface: str, fill: int, workers: int) -> None:
    from jobstatus_adapters import make_service

    if interface == "wsgi":
        from jobstatus_adapters import wsgi_server
        from jobstatus_adapters.wsgi import WSGIApp

        wsgi_server.run(
            lambda: open_store(url, fill),
            lambda opened: WSGIApp(make_service(opened, api_keys=[KEY])),
            host="127.0.0.1",
            port=port,
            workers=workers,
        )
        return
    import uvicorn

    from jobstatus_adapters import listen
    from jobstatus_adapters.serverstack import server_stack

    stack = server_stack()
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "loop": stack.loop,
        "http": uvicorn_http(stack),
    }
    if workers == 1:
        uvicorn.run(app_of(url, fill), **options)
        return
    # As `jobstatus serve --workers N`: spawned workers, each calling the factory.
    os.environ["BENCH_STORE"], os.environ["BENCH_FILL"] = url, str(fill)
    # Spawned workers import "apps" from this script's directory, which is
    # the first entry of the path they are given.
    listen.run_workers("apps:app_from_environ", workers, **options)


def app_of(url: str, fill: int) -> Any:
    from jobstatus_adapters import make_service
    from jobstatus_adapters.starlette import create_app

    app = create_app(make_service(open_store(url, fill), api_keys=[KEY]))
    settle_heap()  # as `jobstatus serve` does once its app is built
    return app


def settle_heap() -> None:
    try:
        from jobstatus_adapters.serverstack import settle_heap as settle
    except ImportError:  # a --baseline checkout from before it: as it served
        return
    settle()


def app_from_environ() -> Any:
    """The app each spawned worker serves."""
    return app_of(os.environ["BENCH_STORE"], int(os.environ["BENCH_FILL"]))


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        floor(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "wsgi-floor":
        wsgi_floor(int(sys.argv[2]), int(sys.argv[3]))
    else:
        workers = int(sys.argv[6]) if len(sys.argv) > 6 else 1
        jobstatus(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), workers)
