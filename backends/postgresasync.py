"""The PostgreSQL store's polled reads from an event loop: a connection of
the loop's own, one statement out at a time, and every read asked while it
is out sent together in the next.

On the loop (``AsyncReads``) ``job/status`` and the listings each need one
read: a job's row, or the store's mark. A statement per read costs more
than the thread hop it would save (docs/performance.md, "PostgreSQL on the
event loop: built, measured, not taken"); a statement per round trip does
not. The reads asked while a statement is out wait for its reply and then
go as one statement — the mark and every job asked — so under load one
statement answers many requests, and with none out a read goes at once.

Never stale: a statement is sent after every read it answers was asked,
and each statement is its own snapshot (autocommit), so it sees every write
committed before any of those requests arrived, through any instance. A
read never joins a statement already sent.

Any failure here (the connection refused or lost, a statement timing out,
no answer within the store's ``timeout``) raises ``WouldBlock``: the
caller then reads on a store thread, with the pool's retries and the
store's own errors, and this loop's reads go there for
``COOLDOWN_SECONDS`` before its connection is tried again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, TypeVar

import psycopg

from jobstatus_core import WouldBlock

from .perloop import PerLoop

R = TypeVar("R")

#: How long a loop's reads go to threads after its connection failed.
COOLDOWN_SECONDS = 5.0

Rows = list[tuple[Any, ...]]


class LoopReads(Generic[R]):
    """Reads of ``statement`` on each event loop's own connection.

    ``statement`` takes one parameter, the job ids asked joined by spaces;
    ``mark_statement``, sent when only the mark was asked, none (a
    parameter costs psycopg about 10 µs a statement); ``parse`` makes the
    rows of either into what each read is answered (once per statement,
    for all who asked). A connection made and a statement answered must
    each take at most ``timeout`` seconds (``statement_timeout`` bounds the
    server's part; this, a server that stopped answering)."""

    def __init__(
        self,
        conninfo: str,
        statement: str,
        mark_statement: str,
        parse: Callable[[Rows], R],
        timeout: float,
    ) -> None:
        self.conninfo = conninfo
        self.statement = statement
        self.mark_statement = mark_statement
        self.parse = parse
        self.timeout = timeout
        #: Set by ``close``: a reader then opens no connection again.
        self.closed = False
        self._loops: PerLoop[_Reader[R]] = PerLoop(lambda: _Reader(self), _closed)

    async def found(self, job_id: str | None) -> R:
        """The next statement's answer, ``job_id`` among the jobs it reads
        (None: the mark only)."""
        reader = await self._loops.get()
        return await reader.found(job_id)

    def close(self) -> None:
        self.closed = True
        self._loops.close()


class _Reader(Generic[R]):
    """One loop's connection and the reads asked for its next statement."""

    def __init__(self, reads: LoopReads[R]) -> None:
        self._reads = reads
        self._loop = asyncio.get_running_loop()
        self._connection: psycopg.AsyncConnection[Any] | None = None
        # Asked since the statement out was sent: its job ids, its readers.
        self._ids: set[str] = set()
        self._waiting: list[asyncio.Future[R]] = []
        # The task sending them, kept: the loop holds its tasks weakly.
        self._sender: asyncio.Task[None] | None = None
        self._refused_until = 0.0

    async def found(self, job_id: str | None) -> R:
        if self._refused_until and time.monotonic() < self._refused_until:
            raise WouldBlock("PostgreSQL's connection on the loop failed lately")
        waiting: asyncio.Future[R] = self._loop.create_future()
        if job_id is not None:
            self._ids.add(job_id)
        self._waiting.append(waiting)
        # A sender that is done has sent all it was asked (also one that an
        # eager task factory, Python 3.12's, ran to its end inside
        # create_task, before it was kept here).
        if self._sender is None or self._sender.done():
            self._sender = self._loop.create_task(self._send())
        # A reader that goes away cancels its own future only.
        return await waiting

    async def _send(self) -> None:
        """Sends what was asked, one statement after another, until nothing
        was asked while the last one was out."""
        waiting: list[asyncio.Future[R]] = []
        try:
            while self._waiting:
                waiting, ids = self._waiting, " ".join(self._ids)
                self._waiting, self._ids = [], set()
                try:
                    answer = self._reads.parse(await self._fetch(ids))
                except Exception as error:
                    for each in waiting:
                        if not each.done():
                            each.set_exception(_refusal(error))
                else:
                    for each in waiting:
                        if not each.done():
                            each.set_result(answer)
                waiting = []
        finally:
            # Cancelled with its loop: nobody is left to answer these.
            for each in (*waiting, *self._waiting):
                each.cancel()

    async def _fetch(self, ids: str) -> Rows:
        # Also for the reads asked while a statement that failed was out.
        if self._reads.closed or time.monotonic() < self._refused_until:
            raise WouldBlock("PostgreSQL's reads on the loop wait after a failure")
        try:
            connection = self._connection or await self._connect()
        except Exception:
            self._refused_until = time.monotonic() + COOLDOWN_SECONDS
            raise
        reads = self._reads
        sent = (reads.statement, (ids,)) if ids else (reads.mark_statement, ())
        statement = self._loop.create_task(_rows(connection, *sent))
        # Waited for, not cancelled at the timeout: psycopg would wait for
        # the server to take a cancel, and a server that stopped answering
        # never does.
        await asyncio.wait((statement,), timeout=reads.timeout)
        if statement.done() and not statement.cancelled() and not statement.exception():
            return statement.result()
        # A new connection next time, after the cooldown: this one may be
        # broken, or still carry the statement, closed once it ends.
        self._refused_until = time.monotonic() + COOLDOWN_SECONDS
        self._connection = None
        statement.add_done_callback(partial(_close_after, connection))
        if statement.done():
            return statement.result()  # raises what the statement raised
        raise TimeoutError("PostgreSQL did not answer the loop's read in time")

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        reads = self._reads
        connect = psycopg.AsyncConnection.connect(reads.conninfo, autocommit=True)
        # A task for it, as wait_for makes: once per connection.
        connection = await asyncio.wait_for(connect, reads.timeout)
        self._connection = connection
        return connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


async def _rows(
    connection: psycopg.AsyncConnection[Any], statement: str, params: tuple[str, ...]
) -> Rows:
    cursor = await connection.execute(statement, params, prepare=True)
    return await cursor.fetchall()


def _close_after(
    connection: psycopg.AsyncConnection[Any], statement: asyncio.Task[Rows]
) -> None:
    """Closes the connection a failed statement was sent on, once it ended."""
    if not statement.cancelled():
        statement.exception()  # retrieved: its readers were answered already
    statement.get_loop().create_task(connection.close())


def _refusal(error: Exception) -> WouldBlock:
    if isinstance(error, WouldBlock):
        return error
    return WouldBlock(f"PostgreSQL's read on the loop failed: {error!r}")


async def _closed(reader: _Reader[Any]) -> None:
    await reader.close()
