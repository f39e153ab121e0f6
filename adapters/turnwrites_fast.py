"""uvicorn's httptools protocol on ``TurnWrites``: its own module, as
httptools is there only with the fast extra."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .turnwrites import OnTurnWrites


class HttpToolsTurnWrites(OnTurnWrites, HttpToolsProtocol):
    """uvicorn's httptools protocol on ``TurnWrites``."""
