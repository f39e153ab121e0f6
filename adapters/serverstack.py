"""The event loop and HTTP parser that `jobstatus serve` runs uvicorn on,
and what it does with the heap once the app is built."""

from __future__ import annotations

import gc
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


def freeze_heap() -> None:
    """Leave what the process holds once its app is built (modules, the
    store, the app) out of the garbage collector's full passes: it lives as
    long as the server. Each full pass walks the whole heap, and a server
    under load makes one every few hundred requests (the objects of the
    requests in flight when a younger pass runs are promoted, and enough
    promoted objects call for a full pass); measured in docs/performance.md.
    Called by `jobstatus serve` in each worker; an app embedding jobstatus
    may call it (or ``gc.freeze()``) once its own start is done."""
    gc.freeze()
