"""The store ``jobstatus serve`` opened, closed when its server stops.

uvicorn answers SIGTERM (systemd, docker stop) by shutting down and then
raising the signal again, so the process ends before the code after
``uvicorn.run`` runs, and a worker of ``--workers N`` has no such code at
all. The lifespan's shutdown is what both get: the store is closed there,
after the app's own shutdown, and the file index writes its snapshot.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstatus_core import Store


class ClosesStore:
    """``app``, closing ``store`` when the server's lifespan shuts down."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def sent(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                # On a thread: writing a large index's snapshot takes seconds.
                await asyncio.to_thread(self.store.close)
            await send(message)

        await self.app(scope, receive, sent)
