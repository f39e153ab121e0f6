"""The Redis store's reads from an event loop, on ``redis.asyncio``.

On the loop a store read cannot wait for its round trip; it raises
``WouldBlock`` naming a fetch (``nowait``), the Starlette adapter awaits the
fetch here and tries the read again with its reply. Measured against the
sync client on the store threads (bench/redis_client.py): 0.55 to 0.71 of the
CPU per read on an idle machine, and no thread to wake.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis
from redis.commands.core import AsyncScript

Use = Callable[["Connection"], Awaitable[Any]]


class Connection:
    """One loop's client, and the scripts registered on it."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self._scripts: dict[str, AsyncScript] = {}

    def script(self, lua: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """Run ``lua`` by its digest (loaded again if the server lost it)."""
        script = self._scripts.get(lua)
        if script is None:
            script = self._scripts[lua] = self.client.register_script(lua)
        return script(keys=keys, args=args)


class AsyncClients:
    """A ``redis.asyncio`` client per event loop: its connections belong to
    the loop that made them. Made on a loop's first fetch."""

    def __init__(self, connect: Callable[[], aredis.Redis]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._connections: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, Connection
        ] = weakref.WeakKeyDictionary()

    async def fetch(self, use: Use) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            connection = self._connections.get(loop)
            if connection is None:
                connection = self._connections[loop] = Connection(self._connect())
        return await use(connection)

    def close(self) -> None:
        """Close each loop's client on its loop (those still running)."""
        with self._lock:
            connections = list(self._connections.items())
            self._connections.clear()
        for loop, connection in connections:
            if loop.is_closed():
                continue
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                asyncio.run_coroutine_threadsafe(connection.client.aclose(), loop)
