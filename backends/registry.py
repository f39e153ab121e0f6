"""The built-in stores, registered by URL scheme.

Each factory imports its module only when a URL of its scheme is opened, so an
app that uses ``memory://`` never imports sqlite-utils or watchdog.
"""

from __future__ import annotations

from jobstatus_core import ConfigError, Registry, Store


def _memory(url: str) -> Store:
    from .memory import MemoryStore

    return MemoryStore.from_url(url)


def _file(url: str) -> Store:
    from .filesystem import FileStore

    return FileStore.from_url(url)


def _file_recording(url: str) -> Store:
    from .filesystem import FileStore

    # Recording reads one file and writes it: an index (a scan of every file
    # at open, a watchdog observer, memory per job) would serve nobody.
    return FileStore.from_url(url, index=False)


def _file_serving(url: str) -> Store:
    from .filesystem import FileStore

    # A million files take a minute to index: the server answers meanwhile
    # (503 while it builds; /healthz at once), rather than refusing
    # connections, which a liveness probe takes for a dead server.
    return FileStore.from_url(url, background=True)


def _sqlite(url: str) -> Store:
    from .sqlite import SQLiteStore

    return SQLiteStore.from_url(url)


def _sqlite_present(url: str) -> None:
    from .sqlite import require_database

    require_database(url)


def _redis(url: str) -> Store:
    try:
        from .redis import RedisStore
    except ImportError:
        raise ConfigError(
            "the Redis store needs redis-py: pip install 'redis[hiredis]'"
            " (the package's 'redis' extra)"
        ) from None

    return RedisStore.from_url(url)


def _postgres(url: str) -> Store:
    try:
        from .postgres import PostgresStore
    except ImportError:
        raise ConfigError(
            "the PostgreSQL store needs psycopg 3 and its pool: pip install"
            " 'psycopg[binary]' psycopg-pool (the package's 'postgres' extra)"
        ) from None

    return PostgresStore.from_url(url)


def default_registry() -> Registry:
    """A new registry holding the built-in stores; add your own to it."""
    registry = Registry()
    registry.register("memory", _memory)
    registry.register("sqlite", _sqlite, present=_sqlite_present)
    registry.register("file", _file, recording=_file_recording, serving=_file_serving)
    registry.register("redis", _redis)
    registry.register("rediss", _redis)
    registry.register("postgresql", _postgres)
    registry.register("postgres", _postgres)
    return registry


registry = default_registry()


def store_from_url(url: str) -> Store:
    """Open a store of any scheme registered in the module's ``registry``."""
    return registry.open(url)


def recording_store_from_url(url: str) -> Store:
    """Open a store to record into (what ``Recorder(url)`` does): the file
    store without its index, unless the URL asks for one (``?index=on``)."""
    return registry.open_for_recording(url)


def serving_store_from_url(url: str) -> Store:
    """Open a store for a server (what ``jobstatus serve`` does): the file
    store's index built in the background, its queries ``StoreUnavailable``
    until it is done."""
    return registry.open_for_serving(url)
