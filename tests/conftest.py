from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from jobstatus_adapters.starlette import create_app
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends import registry, store_from_url
from jobstatus_core import StatusService, Store

from .helpers import (
    API_KEY,
    IN_PROCESS_STORES,
    OWN_ENV_MARKERS,
    STORES,
    AppSwitch,
    Clock,
    LiveServer,
    LiveWSGIServer,
    PostgresServer,
    RedisServer,
    WSGISwitch,
    service_for,
    start_postgres,
    start_redis,
    store_url_for,
)
from .plugin_store import DbmStore


def pytest_configure(config: pytest.Config) -> None:
    # The plug-in point, used as a third party would: register a scheme.
    registry.register("dbm", DbmStore.from_url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that runs on no particular store belongs to the `core` selection,
    # so that `-m core` plus one `-m <store>` per store covers every test.
    for item in items:
        if not any(item.get_closest_marker(name) for name in OWN_ENV_MARKERS):
            item.add_marker(pytest.mark.core)


@pytest.fixture(
    params=[
        pytest.param(kind, marks=getattr(pytest.mark, marker))
        for kind, marker in STORES.items()
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_of(request, tmp_path)


def url_of(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        # One server for the session; a prefix of its own keeps tests apart.
        server: RedisServer = request.getfixturevalue("redis_server")
        return f"{server.url}?prefix=t-{uuid.uuid4().hex[:12]}:"
    if request.param == "postgres":
        # One cluster for the session; a schema of its own keeps tests apart.
        cluster: PostgresServer = request.getfixturevalue("postgres_server")
        return f"{cluster.url}?schema=t_{uuid.uuid4().hex[:12]}"
    return store_url_for(request.param, tmp_path)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server, directory = start_postgres()
    yield server
    server.stop()
    shutil.rmtree(directory)


@pytest.fixture(
    params=[
        pytest.param(kind, marks=getattr(pytest.mark, marker))
        for kind, marker in STORES.items()
        if kind not in IN_PROCESS_STORES
    ]
)
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that a second process can open too."""
    return url_of(request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = store_from_url(store_url)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def live_server() -> Iterator[tuple[LiveServer, AppSwitch]]:
    switch = AppSwitch()
    with LiveServer(switch) as server:
        yield server, switch


@pytest.fixture
def serve(
    live_server: tuple[LiveServer, AppSwitch],
) -> Iterator[Callable[[ASGIApp], str]]:
    """Serve an app on the session's real uvicorn server; returns its base URL.

    One server for the whole session keeps the suite fast; each test swaps in
    its own app.
    """
    server, switch = live_server

    def start(app: ASGIApp) -> str:
        switch.app = app
        return server.url

    yield start
    switch.app = None


@pytest.fixture(scope="session")
def live_wsgi_server() -> Iterator[tuple[LiveWSGIServer, WSGISwitch]]:
    switch = WSGISwitch()
    with LiveWSGIServer(switch) as server:
        yield server, switch


@pytest.fixture
def serve_wsgi(
    live_wsgi_server: tuple[LiveWSGIServer, WSGISwitch],
) -> Iterator[Callable[[Any], str]]:
    """Serve a WSGI app on the session's real waitress server; returns its URL."""
    server, switch = live_wsgi_server

    def start(app: Any) -> str:
        switch.app = app
        return server.url

    yield start
    switch.app = None


@pytest.fixture(params=["asgi", "wsgi"])
def serve_service(
    request: pytest.FixtureRequest,
    serve: Callable[[ASGIApp], str],
    serve_wsgi: Callable[[Any], str],
) -> Callable[..., str]:
    """Serve a StatusService through one adapter or the other, over real HTTP.

    The contract suite runs through both, so any drift between them fails.
    """

    def start(service: StatusService, prefix: str = "") -> str:
        if request.param == "asgi":
            return serve(create_app(service, prefix))
        return serve_wsgi(WSGIApp(service, prefix))

    return start


@pytest.fixture
def service(store: Store, clock: Clock) -> StatusService:
    """The service ``client`` serves: a test that takes both sees its hub."""
    return service_for(store, clock)


@pytest.fixture
def client(
    service: StatusService, serve_service: Callable[..., str]
) -> Iterator[httpx.Client]:
    url = serve_service(service)
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        yield http


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves one of the library's own threads running."""
    before = set(threading.enumerate())
    before_names = {"test-uvicorn", "test-waitress"}
    yield

    def leaked() -> list[threading.Thread]:
        # Idle thread-pool workers (anyio's, trio's, and the Starlette
        # adapter's store threads) outlive any one test; they exit on their own.
        return [
            t
            for t in threading.enumerate()
            if t not in before
            and t.is_alive()
            and t.name not in before_names
            and not t.name.startswith(
                ("AnyIO worker", "Trio thread", "waitress-", "jobstatus-store")
            )
        ]

    # Generous: a thread that is ending may wait for the CPU on a loaded
    # machine; the wait only costs time when a thread really leaked.
    deadline = time.monotonic() + 10.0
    while leaked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not leaked(), f"threads leaked: {leaked()}"
