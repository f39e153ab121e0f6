"""An event loop's connection to redis-server: the commands asked in one turn
of the loop written in one write, their replies read in order.

redis.asyncio takes a pooled connection for each command and reads its reply
through a stream reader inside a timeout scope: 68 µs of this process's CPU
a GET on uvloop, one at a time, where this protocol takes 34 µs; sixteen at
once, 37 against 4 µs a GET (bench/redis_roundtrip.py): the commands of
every request of a turn share one write and one read, where the pool made
a round trip, and its system calls, for each.

A command asked under a ``share`` key that a command not yet written was
asked under takes that command's reply: the requests of a turn that read
the same thing share one round trip, and since it is written after each of
them asked, its reply is never older than any of them.

It speaks RESP2 as redis-py does with ``decode_responses=True`` (text read
as UTF-8, bytes that are not read as U+FFFD) and answers with redis-py's
exceptions, so the store maps its failures one way whichever client read.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any

import hiredis
import redis
import redis.asyncio as aredis
from redis._parsers.base import BaseParser
from redis.exceptions import (
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
    NoScriptError,
)

Arg = str | int | float


@dataclass(frozen=True)
class Address:
    """Where and as whom a loop connects; ``port`` is unused with ``path``."""

    host: str
    port: int
    path: str | None
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    db: int
    timeout: float

    @classmethod
    def of(cls, pool: aredis.ConnectionPool, timeout: float) -> Address | None:
        """The address of redis-py's ``pool`` (made from the store's URL and
        arguments, so both clients read them one way), or None when its
        connections are of a kind this protocol does not make (a credential
        provider's, a custom class): the store then reads on threads."""
        kind, options = pool.connection_class, pool.connection_kwargs
        made = (
            aredis.Connection,
            aredis.SSLConnection,
            aredis.UnixDomainSocketConnection,
        )
        if kind not in made or options.get("credential_provider") is not None:
            return None
        tls = None
        if kind is aredis.SSLConnection:
            tls = aredis.SSLConnection(**options).ssl_context.get()
        return cls(
            host=str(options.get("host", "localhost")),
            port=int(options.get("port", 6379)),
            path=options.get("path"),
            tls=tls,
            username=options.get("username"),
            password=options.get("password"),
            db=int(options.get("db", 0)),
            timeout=timeout,
        )

    def handshake(self) -> list[tuple[tuple[Arg, ...], Instead | None]]:
        """The commands a new connection sends before any other, each with
        what to send instead on an error."""
        commands: list[tuple[tuple[Arg, ...], Instead | None]] = []
        if self.password is not None:
            # As redis-py's HELLO: the user "default" when none is named,
            # which a server without a password lets in whatever is given;
            # before Redis 6, AUTH takes the password alone.
            auth = ("AUTH", self.username or "default", self.password)
            if self.username:
                commands.append((auth, None))
            else:
                older = (AuthenticationWrongNumberOfArgsError, ("AUTH", self.password))
                commands.append((auth, older))
        if self.db:
            commands.append((("SELECT", self.db), None))
        return commands


class Pipe:
    """One loop's commands to redis-server, on one connection at a time: a
    connection that failed fails the commands it carried, and the next
    command opens another."""

    def __init__(self, address: Address) -> None:
        self._address = address
        self._wire: _Wire | None = None
        self._digests: dict[str, str] = {}

    def call(self, *args: Arg, share: Hashable | None = None) -> asyncio.Future[Any]:
        """The reply to one command. An error reply raises as redis-py's
        parser makes it (a ``ResponseError``; ``LOADING`` a
        ``BusyLoadingError``...), a connection that closed under it as
        ``ConnectionLost``, a silent one as ``TimeoutError``.

        ``share``: a key that says all the command reads; asked while a
        command under the same key waits to be written, this one is not
        sent, and takes that one's reply (a future of its own: a caller
        that goes away cancels nothing for the others)."""
        return self._open_wire().send(args, share=share)

    def served(
        self, *args: Arg, share: Hashable | None = None
    ) -> asyncio.Future[tuple[Any, str]]:
        """``call``'s reply with the run id of the server that answered it:
        a connection speaks to one server for its life (a restart closes
        it; a failover moves new connections, not this one), so its
        handshake asks once what every reply it carries would say. Empty
        where the server does not tell (``INFO`` refused, or without one),
        as ``MARK_SCRIPT`` reads it then. (``share``: as ``call``'s; a
        ``call`` under the same key shares no reply with it.)"""
        return self._open_wire().send(args, share=share, served=True)

    def script(
        self, lua: str, keys: list[str], args: list[Any], share: Hashable | None = None
    ) -> asyncio.Future[Any]:
        """Run ``lua`` by its digest; sent whole if the server lost it
        (``share``: as ``call``'s)."""
        digest = self._digests.get(lua)
        if digest is None:
            digest = self._digests[lua] = hashlib.sha1(lua.encode()).hexdigest()
        command = (len(keys), *keys, *args)
        # EVAL, if sent, caches it again for the EVALSHAs after it.
        instead = (NoScriptError, ("EVAL", lua, *command))
        return self._open_wire().send(("EVALSHA", digest, *command), instead, share)

    def _open_wire(self) -> _Wire:
        wire = self._wire
        if wire is None or wire.failed:
            wire = self._wire = _Wire(self._address)
        return wire

    def close(self) -> None:
        if self._wire is not None:
            self._wire.fail(lambda: redis.ConnectionError("the store was closed"))


class ConnectionLost(redis.ConnectionError):
    """The connection closed with the command in flight (redis-server
    restarted, a client killed): worth trying again on a new one, as
    redis-py's sync client does."""


#: The command to send in place of one answered with this error (EVAL for
#: an EVALSHA whose script the server lost, AUTH's older form).
Instead = tuple[type[redis.RedisError], tuple[Arg, ...]]

#: The handshake's last command: the server's run id (``Pipe.served``), which
#: every start of a redis-server draws anew.
_WHO: tuple[Arg, ...] = ("INFO", "server")


class _Sent:
    """A command asked: who waits on its reply, when it times out, what to
    send instead on an error, and whether its reply goes with the run id."""

    __slots__ = ("deadline", "instead", "served", "waiters")

    def __init__(
        self, waiter: asyncio.Future[Any], instead: Instead | None, served: bool
    ) -> None:
        self.waiters = [waiter]
        self.deadline = 0.0  # set as it is queued
        self.instead = instead
        self.served = served

    def answer(self, result: Any) -> None:
        for waiter in self.waiters:
            if not waiter.done():  # its caller went away
                waiter.set_result(result)

    def refuse(self, error: Callable[[], Exception]) -> None:
        """Each waiter its own exception: one raised in many tasks would
        gather all their tracebacks."""
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error())

    def awaited(self) -> bool:
        return not all(waiter.done() for waiter in self.waiters)


class _Wire(asyncio.Protocol):
    """One connection: opened when made, failed once and for good."""

    def __init__(self, address: Address) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = address.timeout
        self.failed = False
        self._transport: asyncio.Transport | None = None
        # Sent one at a time once connected; the commands asked wait for
        # them all (``_ready``): an AUTH refused must not leave them NOAUTH.
        self._greeting = deque([*address.handshake(), (_WHO, None)])
        self._ready = False
        #: The run id ``_WHO`` read (``served``); empty if the server does
        #: not tell.
        self.server = ""
        self._pending: deque[_Sent] = deque()
        self._out: list[bytes] = []
        # The commands not written yet, by (``served``, ``share`` key).
        self._unsent: dict[tuple[bool, Hashable], _Sent] = {}
        self._flushing = False
        # One timer at most: when it fires it looks at the oldest command
        # and sets itself again if that one still has time.
        self._timer: asyncio.TimerHandle | None = None
        # Error replies made into redis-py's exceptions as its own hiredis
        # parser makes them (LOADING a BusyLoadingError, NOSCRIPT a
        # NoScriptError...): the store maps them as on a thread.
        self._reader = hiredis.Reader(
            encoding="utf-8",
            errors="replace",
            replyError=BaseParser.parse_error,
            protocolError=redis.InvalidResponse,
        )
        self._opening = self._loop.create_task(self._open(address))

    async def _open(self, address: Address) -> None:
        try:
            if address.path is not None:
                await self._loop.create_unix_connection(lambda: self, address.path)
            else:
                await self._loop.create_connection(
                    lambda: self, address.host, address.port, ssl=address.tls
                )
        except Exception as exc:  # OSError, ssl.SSLError, a bad host's UnicodeError
            where = address.path or f"{address.host}:{address.port}"
            message = f"Error connecting to {where}: {exc}"
            self.fail(lambda: redis.ConnectionError(message))
        except asyncio.CancelledError:
            # A loop shutting down: no command waits on this one any more.
            self.fail(lambda: redis.ConnectionError("the connection was cancelled"))
            raise

    def send(
        self,
        command: tuple[Arg, ...],
        instead: Instead | None = None,
        share: Hashable | None = None,
        *,
        served: bool = False,
    ) -> asyncio.Future[Any]:
        """A future of ``command``'s reply (``Pipe.call`` says how)."""
        future = self._loop.create_future()
        # A reply with the run id and one without are not the same reply.
        key = None if share is None else (served, share)
        if key is not None:
            unsent = self._unsent.get(key)
            if unsent is not None:
                unsent.waiters.append(future)
                return future
        sent = _Sent(future, instead, served)
        if key is not None:
            self._unsent[key] = sent
        self._queue(sent, _packed(command))
        return future

    def _queue(self, sent: _Sent, packed: bytes) -> None:
        # Sent last, due last: the timer looks at the oldest command only.
        sent.deadline = self._loop.time() + self._timeout
        self._pending.append(sent)
        self._out.append(packed)
        if self._ready and not self._flushing:
            # Written by a callback of its own after this turn, with every
            # command the turn asks: the requests of the turn that ask the
            # same (``share``) share one.
            self._flushing = True
            self._loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = self._loop.call_at(self._pending[0].deadline, self._expire)

    def _flush(self) -> None:
        self._flushing = False
        if self._ready and self._out:
            self._transport.write(b"".join(self._out))  # type: ignore[union-attr]
            self._out.clear()
            # Written: a command asked from now on is asked after it.
            self._unsent.clear()

    def _expire(self) -> None:
        self._timer = None
        if not self._pending:
            return
        deadline = self._pending[0].deadline
        if deadline <= self._loop.time():
            self.fail(lambda: redis.TimeoutError("Timeout reading from socket"))
        else:
            self._timer = self._loop.call_at(deadline, self._expire)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.failed:  # timed out while connecting
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport  # type: ignore[assignment]
        self._greet()

    def _greet(self) -> None:
        """The handshake's next command; once it is done, every command
        asked meanwhile."""
        if self._greeting:
            self._transport.write(_packed(self._greeting[0][0]))  # type: ignore[union-attr]
        else:
            self._ready = True
            self._flush()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._ready:
                    self._greeted(reply)
                    if self.failed:
                        return
                    continue
                sent = self._pending.popleft()
                if not sent.awaited():  # its callers went away
                    continue
                if not isinstance(reply, redis.RedisError):
                    sent.answer((reply, self.server) if sent.served else reply)
                elif sent.instead is not None and isinstance(reply, sent.instead[0]):
                    command, sent.instead = sent.instead[1], None
                    self._queue(sent, _packed(command))
                else:
                    sent.refuse(partial(_copy, reply))
        except (redis.InvalidResponse, IndexError) as exc:
            message = f"Protocol error: {exc}"
            self.fail(lambda: redis.ConnectionError(message))

    def _greeted(self, reply: Any) -> None:
        """The handshake's reply: the next command, its older form, or
        every command carried failed as it was (a wrong password as
        redis-py's AuthenticationError, a database out of range as its
        ResponseError), as a new connection of redis-py's fails; the run id
        kept, where the server gave it."""
        if not self._greeting:  # a reply nothing asked for
            raise redis.InvalidResponse(f"unexpected reply {reply!r:.100}")
        command, instead = self._greeting.popleft()
        if command is _WHO and isinstance(reply, str):
            self.server = _run_id(reply)
        elif command is _WHO and _refused(reply):
            pass  # an ACL or a renamed command: no run id, reads go on
        elif isinstance(reply, redis.RedisError):
            if instead is None or not isinstance(reply, instead[0]):
                kind, args = type(reply), reply.args
                self.fail(lambda: kind(*args))
                return
            self._greeting.appendleft((instead[1], None))
        self._greet()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(lambda: ConnectionLost("Connection closed by server."))

    def fail(self, error: Callable[[], Exception]) -> None:
        """Fail every command in flight (each with an exception of its own:
        one raised in many tasks would gather all their tracebacks)."""
        if self.failed:
            return
        self.failed = True
        pending, self._pending = self._pending, deque()
        self._out.clear()
        self._unsent.clear()
        for sent in pending:
            sent.refuse(error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
        if not self._opening.done() and self._opening is not asyncio.current_task():
            self._opening.cancel()  # timed out while connecting


def _run_id(info: str) -> str:
    """The ``run_id`` field of ``INFO server``'s text, read as
    ``MARK_SCRIPT`` reads it (hex digits; empty if there are none)."""
    found = re.search(r"run_id:([0-9A-Fa-f]+)", info)
    return "" if found is None else found[1]


def _refused(reply: Any) -> bool:
    """Whether ``reply`` refuses ``INFO`` itself (an ACL without it, a
    renamed command) rather than the connection (a full server, BUSY...)."""
    return isinstance(reply, NoPermissionError) or (
        type(reply) is redis.ResponseError and str(reply).startswith("unknown command")
    )


def _copy(error: Exception) -> Exception:
    return type(error)(*error.args)


def _packed(command: tuple[Arg, ...]) -> bytes:
    # hiredis's stub types the command as a tuple of one element.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


def converted(
    source: asyncio.Future[Any], convert: Callable[[Any], Any]
) -> asyncio.Future[Any]:
    """A future of ``source``'s result through ``convert`` (its failure as
    it is)."""
    target = source.get_loop().create_future()
    source.add_done_callback(partial(_converted, target, convert))
    return target


def _converted(
    target: asyncio.Future[Any],
    convert: Callable[[Any], Any],
    source: asyncio.Future[Any],
) -> None:
    if target.done():  # its caller went away
        return
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(convert(source.result()))
