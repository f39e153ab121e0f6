"""The Redis store's reads from an event loop, on the loop's ``Pipe``.

On the loop a store read cannot wait for its round trip; it raises
``WouldBlock`` naming a fetch (``nowait``), the Starlette adapter awaits the
fetch here and tries the read again with its reply. Measured against the
sync client on the store threads (bench/redis_client.py): 0.55 to 0.71 of the
CPU per read on an idle machine with redis.asyncio, and no thread to wake;
the pipe takes less again (bench/redis_roundtrip.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from .perloop import PerLoop
from .redispipe import Address, Pipe

#: A command sent on a pipe: its reply's future.
Use = Callable[[Pipe], "asyncio.Future[Any]"]


class AsyncClients:
    """A ``Pipe`` per event loop (``PerLoop``)."""

    def __init__(self, address: Address) -> None:
        self._loops = PerLoop(lambda: Pipe(address), _closed)

    async def fetch(self, use: Use) -> Any:
        return await use(await self._loops.get())

    def shared(self, use: Use) -> Callable[[], Awaitable[Any]]:
        """A fetch of ``use`` that requests may share: the first call sends
        its command — the pipe writes it after the loop's turn, so every
        request that shares it asked before that. Each waits for the reply:
        one that goes away cancels nothing."""
        sent: asyncio.Future[Any] | None = None
        waiting: list[asyncio.Future[None]] = []

        async def fetch() -> Any:
            nonlocal sent
            if sent is None:
                sent = use(await self._loops.get())
                sent.add_done_callback(partial(_wake, waiting))
            elif sent.done():
                return sent.result()
            # Waited for, not awaited: this request's cancellation raises
            # here and leaves the reply to the others. A future of its own,
            # all woken by one callback of the reply's.
            woken = sent.get_loop().create_future()
            waiting.append(woken)
            await woken
            return sent.result()

        return fetch

    def close(self) -> None:
        self._loops.close()


def _wake(waiting: list[asyncio.Future[None]], sent: asyncio.Future[Any]) -> None:
    # Every request sharing it may have gone: its failure is retrieved
    # here, not logged as one nobody saw.
    if not sent.cancelled():
        sent.exception()
    for woken in waiting:
        if not woken.done():  # cancelled with the request that waited
            woken.set_result(None)


async def _closed(pipe: Pipe) -> None:
    pipe.close()
