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
from collections.abc import Callable, Hashable
from typing import Any

from .perloop import PerLoop
from .redispipe import Address, Pipe

#: A command sent on a pipe, under a ``share`` key (or None): its reply's
#: future.
Use = Callable[[Pipe, Hashable | None], "asyncio.Future[Any]"]


class AsyncClients:
    """A ``Pipe`` per event loop (``PerLoop``)."""

    def __init__(self, address: Address) -> None:
        self._loops = PerLoop(lambda: Pipe(address), _closed)

    async def fetch(self, use: Use, share: Hashable | None = None) -> Any:
        """``use``'s reply on the running loop's pipe, its command sent under
        ``share`` (``Pipe.call``: the requests asking under one key before
        it is written share one round trip)."""
        return await use(await self._loops.get(), share)

    def close(self) -> None:
        self._loops.close()


async def _closed(pipe: Pipe) -> None:
    pipe.close()
