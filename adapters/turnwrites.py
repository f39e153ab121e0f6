"""A connection's writes sent together at the end of the loop's turn, and
the uvicorn protocols `jobstatus serve` runs with them.

uvicorn writes a response's status line and headers, then its body, each
with a write of its own: two sends, two TCP segments, and two wakes of the
client, for an answer that fits in one. Held until the end of the turn that
made them, a response's writes leave in one ``writelines`` (one ``writev``
on uvloop): measured in docs/performance.md ("A response in one write")."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Bytes held before they are sent at once, without waiting for the turn's
#: end: asyncio's default high-water mark, so a body written in many parts
#: within one turn meets the transport's flow control as it would unheld.
HELD_AT_MOST = 64 * 1024


class TurnWrites(asyncio.Transport):
    """``transport``, with the writes of one turn of the loop held and
    sent together in the next (or at once past ``HELD_AT_MOST`` bytes, or
    before the transport closes or ends its writing); all else is the
    transport's own."""

    __slots__ = ("_held", "_held_bytes", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._held: list[bytes | bytearray | memoryview] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._send)
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= HELD_AT_MOST:
            self._send()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _send(self) -> None:
        if not self._held:
            return  # sent before the turn ended
        held, self._held, self._held_bytes = self._held, [], 0
        # A connection lost meanwhile takes no more writes: asyncio would
        # count them and log a warning after a few.
        if not self._transport.is_closing():
            self._transport.writelines(held)

    def close(self) -> None:
        self._send()
        self._transport.close()

    def write_eof(self) -> None:
        self._send()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class H11TurnWrites(H11Protocol):
    """uvicorn's h11 protocol on ``TurnWrites``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream's transport (uvloop's are not asyncio.Transport's
        # subclasses, only alike).
        super().connection_made(TurnWrites(cast(asyncio.Transport, transport)))
