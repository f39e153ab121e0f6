"""A response's status line, headers and body sent with one write, and the
uvicorn protocols `jobstatus serve` runs with it.

uvicorn writes a response's status line and headers, then its body, each
with a write of its own: two sends, two TCP segments, and two wakes of the
client, for an answer that fits in one. Here a write waits for the next, and
the two leave in one ``writelines`` (one ``writev`` on uvloop); a write that
no other follows in its turn of the loop (the head of a HEAD answer, or of
a stream whose body comes later) leaves at the turn's end. Measured in
docs/performance.md ("A response in one write")."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

#: A write this large is never held: asyncio's default high-water mark, so
#: that a large body meets the transport's flow control as it would unheld.
HELD_AT_MOST = 64 * 1024

Data = bytes | bytearray | memoryview


class TurnWrites(asyncio.Transport):
    """``transport``, with each write under ``HELD_AT_MOST`` bytes held
    until the next write, sent with it, or until the end of the loop's turn
    (or the transport's close, or end of writing); all else is the
    transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._held = b""

    def write(self, data: Data) -> None:
        if not data:
            return
        if self._held:
            held, self._held = self._held, b""
            self._transport.writelines((held, data))
        elif len(data) < HELD_AT_MOST:
            # Its own copy of a buffer its writer may reuse, as a transport
            # keeps what it cannot send at once.
            self._held = data if isinstance(data, bytes) else bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is held: at the end of the turn, if the write after it
        has not sent it already, or before the transport closes."""
        if not self._held:
            return
        held, self._held = self._held, b""
        # Not to a connection lost meanwhile: asyncio counts writes there
        # and logs a warning after a few.
        if not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = b""
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return len(self._held) + self._transport.get_write_buffer_size()

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


class OnTurnWrites(asyncio.Protocol):
    """What a uvicorn HTTP protocol needs to run on ``TurnWrites``: mixed
    in before it."""

    _turn: TurnWrites

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream's transport (uvloop's are not asyncio.Transport's
        # subclasses, only alike).
        self._turn = TurnWrites(cast(asyncio.Transport, transport))
        super().connection_made(self._turn)

    def eof_received(self) -> None:
        # The transport closes itself when this returns (uvicorn keeps no
        # half-open connection): what the turn wrote leaves first, as it
        # would have unheld — the only write of a HEAD, 204 or 304 answer
        # to a client that ended its side after its request.
        self._turn.flush()
        super().eof_received()


class H11TurnWrites(OnTurnWrites, H11Protocol):
    """uvicorn's h11 protocol on ``TurnWrites``."""
