"""Shared test helpers: a real server in a thread, a hand-moved clock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from jobstatus_adapters.changes import Changes
from jobstatus_adapters.service import make_service
from jobstatus_core import StatusService, Store, WouldBlock, nowait

API_KEY = "test-key-0123456789"
#: Every store the shared suites run on, with the marker that selects it.
STORES = {
    "memory": "memory",
    "sqlite": "sqlite",
    "filesystem": "filesystem",
    "filesystem-scan": "filesystem",
    "redis": "redis",
    "postgres": "postgres",
    # A third-party store, registered by scheme (tests/plugin_store.py).
    "dbm": "plugin",
}
STORE_MARKERS = tuple(sorted(set(STORES.values())))
#: Markers of tests that belong to a tox env of their own, not to `core`.
OWN_ENV_MARKERS = (
    *STORE_MARKERS,
    "hosts",
    "celery",
    "rq",
    "dramatiq",
    "huey",
    "dashboard",
)
#: Stores that live inside one process: no second process can open them.
IN_PROCESS_STORES = {"memory", "dbm"}

T = TypeVar("T")


def store_url_for(kind: str, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'jobs.db'}"
    if kind.startswith("filesystem"):
        # An empty store that exists; a missing jobs directory is its own test.
        (tmp_path / "jobs").mkdir(exist_ok=True)
    if kind == "filesystem":
        return f"file://{tmp_path}?reconcile=0.5"
    if kind == "filesystem-scan":
        return f"file://{tmp_path}?index=off"
    if kind == "dbm":
        return f"dbm://{tmp_path / 'jobs'}"
    raise AssertionError(kind)


def expiring(url: str) -> str:
    """The store at ``url``, allowed to expire jobs: the file store deletes
    the Toolkit's job files only when its URL says so."""
    if url.startswith("file:"):
        return url + ("&" if "?" in url else "?") + "expire=delete"
    return url


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def service_for(
    store: Store, clock: Callable[[], float] | None = None, **options: Any
) -> StatusService:
    options.setdefault("api_keys", [API_KEY])
    if not options["api_keys"]:
        del options["api_keys"]
    service = make_service(store, **options)
    if clock is not None:
        service.clock = clock
    return service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f}s")
        time.sleep(0.02)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """``wait_for`` on an event loop: its callbacks run while it waits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f}s")
        await asyncio.sleep(0.01)


class AppSwitch:
    """An ASGI app that forwards to whichever app a test put in it."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no app is being served"
        await self.app(scope, receive, send)


class WSGISwitch:
    """A WSGI app that forwards to whichever app a test put in it."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.app is not None, "no app is being served"
        return self.app(environ, start_response)


class LiveWSGIServer:
    """A real waitress server on a loopback port, in threads of this process."""

    def __init__(self, app: Any) -> None:
        from waitress.server import create_server

        self.server = create_server(app, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"  # type: ignore[union-attr]
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="test-waitress")

    def _serve(self) -> None:
        from waitress import wasyncore

        # waitress's own ``run`` loops until its sockets are closed, and
        # closing them from another thread while it waits in ``select``
        # fails it with EBADF: the loop stops here, then closes them itself.
        while not self._stopping.is_set():
            wasyncore.loop(timeout=0.05, map=self.server._map, count=1)  # type: ignore[union-attr]
        # The listening socket and every connection still open (a client's
        # kept-alive one): closed, not left to the garbage collector, whose
        # ResourceWarning at the session's end fails it.
        wasyncore.close_all(self.server._map)  # type: ignore[union-attr]

    def __enter__(self) -> LiveWSGIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self.thread.join(10)
        self.server.task_dispatcher.shutdown()  # type: ignore[union-attr]


@contextlib.contextmanager
def wsgiref_server(app: Any) -> Iterator[int]:
    """The standard library's WSGI server (what Django's runserver builds
    on): it hands the app what it got, neither decoding a chunked body nor
    saying where one ends. Yields its port."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="test-wsgiref")
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def answers(store: Store) -> bool:
    """Whether ``store`` reads its mark (after a restart of its server)."""
    from jobstatus_core import StoreUnavailable

    try:
        store.mark()
    except StoreUnavailable:
        return False
    return True


class LiveServer:
    """A real uvicorn server on a loopback port, in a thread of this process."""

    def __init__(
        self,
        app: ASGIApp,
        loop: str = "asyncio",
        http: type[asyncio.Protocol] | str = "auto",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # By default the plain asyncio loop, as `pip install jobstatus`
        # serves; uvloop (in the test extra) where a test asks for it, and
        # in `jobstatus serve`, whose uvicorn picks it when installed.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            loop=loop,  # type: ignore[arg-type]
            http=http,  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn")

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class RedisServer:
    """A real redis-server on a loopback port, persisting to ``directory``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def accepting() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(accepting, 10)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


REDIS_MISSING = (
    "redis-server not found: install it (apt-get install redis-server) to run "
    "the Redis store's tests; .ci/run installs it, and in CI they never skip"
)


SETTINGS_ENV = (
    "JOBSTATUS_STORE",
    "LOCAL_STORAGE_PATH",
    "API_KEY",
    "JOBSTATUS_API_KEYS",
    "JOBSTATUS_DEFAULT_SINCE",
    "JOBSTATUS_MAX_BODY",
    "BUILD_NUMBER",
)


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without jobstatus settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    return {**env, **settings}


class ServeProcess:
    """``jobstatus serve`` as a user runs it: a real process on a free port."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobstatus_adapters.cli",
                "serve",
                "--port",
                str(self.port),
                *args,
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(self._ready, 30)

    def _ready(self) -> bool:
        """Ready, as an orchestrator waits for it: the server listens at
        once, and its file index may still be building (``503``)."""
        assert self.process.poll() is None, self.process.communicate()
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> tuple[str, str]:
        """Stop it; its stdout and stderr."""
        self.process.terminate()
        return self.process.communicate(timeout=30)


class PostgresServer:
    """A throwaway PostgreSQL cluster on a loopback port, its unix socket in
    its own directory. Password auth over TCP (user ``jobstatus``, password
    ``secret``), so a wrong password is refused as on a real server. As root,
    the cluster runs as the ``postgres`` user (initdb refuses root)."""

    user = "jobstatus"
    password = "secret"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.data = directory / "data"
        self.socket_dir = directory / "socket"
        self.url = (
            f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"
        )

    @staticmethod
    def binaries() -> Path:
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/initdb"),
            key=lambda path: int(path.parent.parent.name.split(".")[0]),
        )
        if found:
            return found[-1].parent
        initdb = shutil.which("initdb")
        if initdb is None:
            raise FileNotFoundError("initdb")
        return Path(initdb).parent

    def _as_owner(self, *command: str | Path) -> list[str]:
        args = [str(part) for part in command]
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def init(self) -> PostgresServer:
        bin_dir = self.binaries()
        self.socket_dir.mkdir(parents=True)
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            shutil.chown(self.socket_dir, "postgres")
            shutil.chown(password_file, "postgres")
        subprocess.run(
            self._as_owner(
                bin_dir / "initdb",
                "-D",
                self.data,
                "-U",
                self.user,
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.start()

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            self._as_owner(
                self.binaries() / "pg_ctl",
                "-D",
                self.data,
                "-o",
                options,
                "-l",
                self.directory / "log",
                "-w",
                "start",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(
                self.binaries() / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )


POSTGRES_MISSING = (
    "PostgreSQL's server (initdb) not found: install it (apt-get install "
    "postgresql) to run the PostgreSQL store's tests; .ci/run installs it, and "
    "in CI they never skip"
)


def start_postgres() -> tuple[PostgresServer, Path]:
    """A PostgreSQL cluster of the caller's own, in a new directory (a
    pytest one is not reachable by the ``postgres`` user); skips without
    the server (fails in CI)."""
    directory = Path(tempfile.mkdtemp(prefix="jobstatus-pg-"))
    try:
        return PostgresServer(directory).init(), directory
    except FileNotFoundError:
        shutil.rmtree(directory)
        if os.environ.get("CI"):
            pytest.fail(POSTGRES_MISSING)
        pytest.skip(POSTGRES_MISSING)


def start_redis(directory: Path) -> RedisServer:
    """A redis-server of the caller's own; skips without one (fails in CI)."""
    try:
        return RedisServer(directory).start()
    except FileNotFoundError:
        if os.environ.get("CI"):
            pytest.fail(REDIS_MISSING)
        pytest.skip(REDIS_MISSING)


def stat_with_size(info: os.stat_result, size: int) -> os.stat_result:
    """``info`` as if the file had ``size`` bytes (to inject a racing writer)."""
    fields = list(info[:10])
    fields[6] = size
    extra = (
        "st_atime",
        "st_mtime",
        "st_ctime",
        "st_atime_ns",
        "st_mtime_ns",
        "st_ctime_ns",
        "st_blksize",
        "st_blocks",
    )
    return os.stat_result(fields, {name: getattr(info, name) for name in extra})


@contextlib.contextmanager
def redis_user(raw: Any, name: str, password: str, *denied: str) -> Iterator[str]:
    """A Redis ACL user with every key, channel and command but ``denied``,
    for the block; its credentials as a URL's ``user:password@``."""
    raw.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", *(f"-{command}" for command in denied)],
    )
    try:
        yield f"{name}:{password}@"
    finally:
        raw.acl_deluser(name)


async def attempted_on_the_loop(call: Callable[[], T]) -> T:
    """``call`` as the Starlette adapter runs a store read on the loop:
    tried, its round trip awaited, tried again with the reply."""
    fetched: dict[Hashable, nowait.Outcome] = {}
    while True:
        try:
            with nowait.attempt(fetched):
                return call()
        except WouldBlock as refused:
            assert refused.fetch is not None and refused.key not in fetched
            fetched[refused.key] = (True, await refused.fetch())


async def read_on_the_loop(store: Store, job_id: str) -> str | None:
    """The job's status, read on the loop (``attempted_on_the_loop``)."""
    row = await attempted_on_the_loop(lambda: store.read(job_id))
    return None if row is None else row.status


def in_progress(url: str, operation: str, key: str = API_KEY) -> float | None:
    """``jobstatus_requests_in_progress`` of ``operation`` in a scrape of
    ``url`` (a ``/metrics``): the waits or streams it holds open; ``None``
    before the first one."""
    text = httpx.get(url, headers={"x-api-key": key}, timeout=10).text
    found = re.search(
        rf'^jobstatus_requests_in_progress{{operation="{operation}"}} (\S+)$',
        text,
        re.M,
    )
    return None if found is None else float(found.group(1))


class Writer(threading.Thread):
    """``script`` on a thread of its own; ``join`` re-raises what failed in
    it. Its writes wait for the server to be waiting (``waiting``), not for
    a timer: a wait that reached the server after the timer fired would find
    the change made already, and a wait "until changed" never met."""

    def __init__(self, script: Callable[[], object]) -> None:
        super().__init__(name="test-writer")
        self.script = script
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.script()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def waiting(hub: Changes) -> None:
    """Until a wait has read the store and sleeps until a change: its
    version (or position) is taken, so a change from now on is one it
    waits for."""
    wait_for(lambda: hub.subscribed >= 1, 30)
