"""uvicorn's httptools protocol on ``TurnWrites``: its own module, as
httptools is there only with the fast extra."""

from __future__ import annotations

import asyncio
from typing import cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .turnwrites import TurnWrites


class HttpToolsTurnWrites(HttpToolsProtocol):
    """uvicorn's httptools protocol on ``TurnWrites``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream's transport (uvloop's are not asyncio.Transport's
        # subclasses, only alike).
        super().connection_made(TurnWrites(cast(asyncio.Transport, transport)))
