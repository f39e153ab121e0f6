"""``jobstatus serve --interface wsgi``: the WSGI adapter under gunicorn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobstatus_core import ConfigError, Store

from .wsgi import WSGIApp

#: Threads per worker: status requests are short and mostly wait on I/O.
THREADS = 8


def require_gunicorn() -> Any:
    """gunicorn's application base, or the one-line fix when it is missing."""
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise ConfigError(
            "--interface wsgi needs gunicorn: pip install gunicorn"
            " (the package's 'wsgi' extra)"
        ) from None
    return BaseApplication


def run(
    open_store: Callable[[], Store],
    build_app: Callable[[Store], WSGIApp],
    *,
    host: str,
    port: int,
    workers: int = 1,
) -> None:
    """Serve until stopped. Stores are opened in each worker, after the fork:
    neither watchdog's threads nor an SQLite connection survive a fork."""
    base = require_gunicorn()

    stores: list[Store] = []

    def load() -> WSGIApp:
        store = open_store()
        stores.append(store)
        return build_app(store)

    def worker_exit(server: Any, worker: Any) -> None:
        for store in stores:
            store.close()

    class Server(base):  # type: ignore[misc, valid-type]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", THREADS)
            self.cfg.set("worker_exit", worker_exit)
            self.cfg.set("loglevel", "warning")

        def load(self) -> WSGIApp:
            return load()

    Server().run()
