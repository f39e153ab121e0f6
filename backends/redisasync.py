"""The Redis store's reads from an event loop, on ``redis.asyncio``.

On the loop a store read cannot wait for its round trip; it raises
``WouldBlock`` naming a fetch (``nowait``), the Starlette adapter awaits the
fetch here and tries the read again with its reply. Measured against the
sync client on the store threads (bench/redis_client.py): 0.55 to 0.71 of the
CPU per read on an idle machine, and no thread to wake.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import redis.asyncio as aredis
from redis.commands.core import AsyncScript

from .perloop import PerLoop

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

    def script(self, lua: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """Run ``lua`` by its digest (loaded again if the server lost it)."""
        script = self._scripts.get(lua)
        if script is None:
            script = self._scripts[lua] = self.client.register_script(lua)
        return script(keys=keys, args=args)


class AsyncClients:
    """A ``redis.asyncio`` client per event loop (``PerLoop``)."""

    def __init__(self, connect: Callable[[], aredis.Redis]) -> None:
        self._loops = PerLoop(lambda: Connection(connect()), _closed)

    async def fetch(self, use: Use) -> Any:
        connection = await self._loops.get()
        async with connection.slots:
            return await use(connection)

    def shared(self, use: Use) -> Callable[[], Awaitable[Any]]:
        """A fetch of ``use`` that requests may share: the first call starts
        it as a task of its own, which sends its command when the loop next
        gets to it — every request that shares it asked before that. Each
        waits for it: one that goes away cancels nothing.

        Measured against the first request sending at once and the others
        sharing its reply: more requests share each round trip (job/status
        on one polled job 0.40 of the floor against 0.34)."""
        task: asyncio.Future[Any] | None = None

        async def fetch() -> Any:
            nonlocal task
            if task is None:
                # In a context of its own: the caller's says it is on the
                # loop trying a read (``nowait``).
                task = contextvars.Context().run(asyncio.ensure_future, self.fetch(use))
                task.add_done_callback(_retrieved)
            # Waited for, not awaited: this request's cancellation raises
            # here and leaves the task to the others. A future of its own
            # (as asyncio.wait makes, without its sets and coroutine, and
            # its get_running_loop(): a getpid() system call on 3.11).
            woken = task.get_loop().create_future()
            task.add_done_callback(partial(_wake, woken))
            await woken
            if task.cancelled():
                # (A loop shutting down cancels every task.) Its own.
                return await self.fetch(use)
            return task.result()

        return fetch

    def close(self) -> None:
        self._loops.close()


def _wake(woken: asyncio.Future[None], task: asyncio.Future[Any]) -> None:
    if not woken.done():  # cancelled with the request that waited
        woken.set_result(None)


def _retrieved(task: asyncio.Future[Any]) -> None:
    # Every request sharing it may have gone: its failure is retrieved
    # here, not logged as one nobody saw.
    if not task.cancelled():
        task.exception()


async def _closed(connection: Connection) -> None:
    await connection.client.aclose()
