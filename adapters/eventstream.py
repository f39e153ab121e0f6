"""One response of server-sent events, written straight to ASGI's ``send``.

The feed encodes its events itself (``jobstatus_core.feed``): what is left to
do here is the response's head, the bytes as they come, heartbeats and the
end — and noticing a client that goes away. A change that 1,000 streams
follow is written 1,000 times in a row on one event loop, so each stream's
share of a broadcast is what its subscribers wait for: one task and one
``send`` per event, the last event and the body's end in one write, no
task group to cancel when a stream ends (docs/performance.md measures it
against sse-starlette, which this replaced).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive, Send

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"connection", b"keep-alive"),
    # nginx buffers responses by default; a buffered event arrives late.
    (b"x-accel-buffering", b"no"),
]

#: A comment line: proxies see traffic on an idle stream and keep it open.
HEARTBEAT = b": ping\r\n\r\n"


class EventStream:
    """Server-sent events on one ASGI response
    (``async with EventStream(receive, send) as stream``).

    ``gone`` is done once the client has gone away: a stream waiting for
    a change passes it to the wait, which then returns at once, so the
    stream frees its place. asyncio only, as the change hub is.
    """

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._watcher: asyncio.Task[None] | None = None
        self._ended = False
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def __aenter__(self) -> EventStream:
        self._watcher = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._ended = True
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        # uvicorn answers "http.disconnect" to a receive after the response
        # has ended too: only one before that is the client going away.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._ended and not self.gone.done():
            self.gone.set_result(None)

    async def start(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """The response's head: status 200, the SSE headers, ``headers``."""
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*HEADERS, *(headers or [])],
            }
        )

    async def write(self, data: bytes, *, last: bool = False) -> None:
        """Send ``data``; with ``last``, the body's end in the same write."""
        self._ended = last
        await self._send(
            {"type": "http.response.body", "body": data, "more_body": not last}
        )
        if last:
            # A change wakes every stream that follows it in one turn of the
            # loop, and each writes in turn: the ended stream's teardown
            # (metrics, the server's bookkeeping) waits for the next turn
            # rather than delaying the streams still to write.
            await asyncio.sleep(0)
