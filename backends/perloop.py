"""One client per event loop, for a network store's reads on the loop (Redis).

A connection made on an event loop belongs to the loop that opened it: a
server with several loops (threads, tests) needs one client on each. Each is
made on its loop's first use, closed when that loop shuts down, and dropped
from here once the loop is closed (noticed when another loop makes its own).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

C = TypeVar("C")


class PerLoop(Generic[C]):
    """The client of the running loop, made by ``make`` and closed by
    ``close`` (awaited on its own loop)."""

    def __init__(
        self, make: Callable[[], C], close: Callable[[C], Awaitable[None]]
    ) -> None:
        self._make = make
        self._close = close
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, C] = {}
        # The generators that close each client with its loop, kept alive
        # until then.
        self._closers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}

    def __len__(self) -> int:
        """How many loops have a client (closed ones until they are noticed)."""
        return len(self._clients)

    async def get(self) -> C:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is not None:
                return client
            for closed in [each for each in self._clients if each.is_closed()]:
                del self._clients[closed]
                self._closers.pop(closed, None)
            client = self._clients[loop] = self._make()
            # asyncio.run (and uvicorn, and uvloop's runner) close every
            # async generator still open before closing the loop, this one
            # among them: without it a loop closed under the client leaves
            # its sockets to the garbage collector.
            closer = self._closers[loop] = self._closed_with(client)
        await anext(closer)
        return client

    async def _closed_with(self, client: C) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close(client)

    def close(self) -> None:
        """Close each loop's client on its loop (those still running)."""
        with self._lock:
            closers = list(self._closers.items())
            self._clients.clear()
            self._closers.clear()
        for loop, closer in closers:
            if loop.is_closed():
                continue
            # The generator's end closes the client, once.
            ending = _ended(closer)
            try:
                asyncio.run_coroutine_threadsafe(ending, loop)
            except RuntimeError:  # the loop closed meanwhile: never awaited
                ending.close()


async def _ended(closer: AsyncGenerator[None, None]) -> None:
    await closer.aclose()
