"""The event loop and HTTP parser that `jobstatus serve` runs uvicorn on,
the JSON parser services read bodies with, and what `serve` does with the
heap once the app is built."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Objects the collector's young generation holds before a pass (Python's
#: default: 700), under `jobstatus serve` (``settle_heap``).
YOUNG_OBJECTS = 5000


@dataclass(frozen=True)
class ServerStack:
    """uvicorn's ``loop`` and ``http`` settings, as uvicorn names them."""

    loop: str
    http: str

    def describe(self) -> str:
        return f"uvicorn, loop {self.loop}, http {self.http}"

    def protocol(self) -> type[asyncio.Protocol]:
        """uvicorn's protocol for ``http`` on ``turnwrites.TurnWrites`` (a
        response's head and body in one write): uvicorn's ``http`` setting."""
        if self.http == "httptools":
            from .turnwrites_fast import HttpToolsTurnWrites

            return HttpToolsTurnWrites
        from .turnwrites import H11TurnWrites

        return H11TurnWrites


def server_stack() -> ServerStack:
    """uvloop and httptools when installed (``pip install jobstatus[fast]``),
    else the pure-Python asyncio and h11 that uvicorn always brings.

    Chosen here, not by uvicorn's ``auto``, so the start line can say which
    one runs: the fast pair serves about twice the requests per core."""
    return ServerStack(
        loop="uvloop" if _installed("uvloop") else "asyncio",
        http="httptools" if _installed("httptools") else "h11",
    )


def json_parser() -> Callable[[bytes], Any] | None:
    """orjson's ``loads`` when installed (``jobstatus[fast]``): it reads a
    status poll's body in about a seventh of ``json``'s time (2-3 µs of a
    request served, docs/performance.md). The service tries it first and
    leaves to ``json`` whatever it would read differently
    (``validation.parse_body``)."""
    if not _installed("orjson"):
        return None
    import orjson

    return orjson.loads


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def settle_heap() -> None:
    """Set the garbage collector for a server, once its app is built.

    What the process holds then (modules, the store, the app) lives as long
    as the server: it is frozen out of the collector's full passes, which
    walk the whole heap and which a loaded server made every few hundred
    requests (the objects of the requests in flight at a younger pass are
    promoted, and enough promoted objects call for a full pass). And the
    young generation holds 5,000 objects instead of 700 before a pass:
    sixteen requests in flight hold more than 700, so each turn of the loop
    made a pass that found nothing to free. Measured in docs/performance.md
    ("The garbage collector"). Called by `jobstatus serve` in each worker;
    an app embedding jobstatus may call it once its own start is done."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, middle, old)
