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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aredis
from redis.commands.core import AsyncScript

Use = Callable[["Connection"], Awaitable[Any]]


#: Round trips one loop has in flight on its client at once: the pool opens
#: a connection for each (it refuses past 100), and more at once only
#: queue in redis-server.
MAX_IN_FLIGHT = 32


class Connection:
    """One loop's client, the scripts registered on it, and its slots."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._scripts: dict[str, AsyncScript] = {}

    async def close_with_the_loop(self) -> None:
        """Close the client when its loop shuts down: ``asyncio.run`` (and
        uvicorn, and uvloop's runner) close every async generator still
        open before closing the loop, this one among them. Without it, a
        loop closed under the client leaves its sockets to the garbage
        collector."""
        self._closer = _closed_with(self.client)
        await anext(self._closer)

    def script(self, lua: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """Run ``lua`` by its digest (loaded again if the server lost it)."""
        script = self._scripts.get(lua)
        if script is None:
            script = self._scripts[lua] = self.client.register_script(lua)
        return script(keys=keys, args=args)


class AsyncClients:
    """A ``redis.asyncio`` client per event loop: its connections belong to
    the loop that made them. Made on a loop's first fetch; dropped once that
    loop is closed (noticed when another loop makes its own)."""

    def __init__(self, connect: Callable[[], aredis.Redis]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._connections: dict[asyncio.AbstractEventLoop, Connection] = {}

    async def fetch(self, use: Use) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            connection = self._connections.get(loop)
            made = connection is None
            if connection is None:
                for closed in [each for each in self._connections if each.is_closed()]:
                    del self._connections[closed]
                connection = self._connections[loop] = Connection(self._connect())
        if made:
            await connection.close_with_the_loop()
        async with connection.slots:
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


async def _closed_with(client: aredis.Redis) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.aclose()
