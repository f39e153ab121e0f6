"""Server-sent events over ASGI: a feed's bytes, sent as they come.

sse-starlette's ``EventSourceResponse`` runs four tasks per stream (the
events, a ping, a shutdown watch, a disconnect watch), and a cancel scope and
a lock around each send; with 1,000 streams of one job woken at once, that
machinery cost more than the event itself (docs/performance.md). Here a
stream is its request's own task plus one that waits for the client to go;
the change hub answers every stream when the server stops, and the feed sends
its heartbeat itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator

from starlette.types import Receive, Send

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"connection", b"keep-alive"),
    # nginx would buffer the stream otherwise.
    (b"x-accel-buffering", b"no"),
]


#: Server-sent events, encoded, and whether they are the stream's last (sent
#: with the body's end in one write: after a job's last event, 1,000 streams
#: of it end in 1,000 writes, not 2,000).
Chunk = tuple[bytes, bool]


async def send_events(
    chunks: AsyncGenerator[Chunk, None], receive: Receive, send: Send
) -> None:
    """``200`` and ``chunks`` as the body, until the last or the client goes."""
    task = asyncio.current_task()
    assert task is not None
    streaming = True

    def hang_up(_: asyncio.Future[None]) -> None:
        # Wherever the stream waits (for a change, a store read, a slow
        # client), a client that went frees its place at once.
        if streaming:
            task.cancel()

    gone = asyncio.ensure_future(disconnected(receive))
    gone.add_done_callback(hang_up)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        last = False
        async for chunk, last in chunks:
            if last:
                streaming = False
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": not last}
            )
            if last:
                break
        if not last:
            streaming = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not streaming or not gone.done() or gone.cancelled():
            raise  # not the client's leaving: the server's own cancellation
        if sys.version_info >= (3, 11):
            task.uncancel()
    finally:
        streaming = False
        gone.cancel()
        await chunks.aclose()


async def disconnected(receive: Receive) -> None:
    """Returns when the client goes away (its body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
