"""The event loop and HTTP parser that `jobstatus serve` runs uvicorn on."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerStack:
    """uvicorn's ``loop`` and ``http`` settings, as uvicorn names them."""

    loop: str
    http: str

    def describe(self) -> str:
        return f"uvicorn, loop {self.loop}, http {self.http}"


def server_stack() -> ServerStack:
    """uvloop and httptools when installed (``pip install jobstatus[fast]``),
    else the pure-Python asyncio and h11 that uvicorn always brings.

    Chosen here, not by uvicorn's ``auto``, so the start line can say which
    one runs: the fast pair serves about twice the requests per core."""
    return ServerStack(
        loop="uvloop" if _installed("uvloop") else "asyncio",
        http="httptools" if _installed("httptools") else "h11",
    )


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
