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
``COOLDOWN_SECONDS`` before its connection is tried again. A connection
lost while no statement was out (a restart, an idle timeout) failed no
read: the next read makes a new one at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

from jobstatus_core import WouldBlock

from .perloop import PerLoop

R = TypeVar("R")

#: How long a loop's reads go to threads after its connection failed.
COOLDOWN_SECONDS = 5.0

Rows = list[tuple[Any, ...]]


class LoopReads(Generic[R]):
    """Reads of ``statement`` on each event loop's own connection.

    ``statement`` takes one parameter (libpq's ``$1``), the job ids asked
    joined by spaces; ``mark_statement``, sent when only the mark was
    asked, none and no join; ``parse`` makes the rows of either into what
    each read is answered (once per statement, for all who asked). A
    connection made and a statement answered must each take at most
    ``timeout`` seconds (``statement_timeout`` bounds the server's part;
    this, a server that stopped answering)."""

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
        self._wire: Wire | None = None
        # Asked since the statement out was sent: its job ids, its readers.
        self._ids: set[str] = set()
        self._waiting: list[asyncio.Future[R]] = []
        # The task sending them, kept: the loop holds its tasks weakly.
        self._sender: asyncio.Task[None] | None = None
        self._refused_until = 0.0
        self._closed = False

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
        reads = self._reads
        try:
            wire = self._wire
            if wire is None or wire.closed:
                # One lost while idle (a restart, an idle timeout) is
                # replaced at once: no statement of it failed.
                wire = await self._connect()
            if ids:
                return await wire.rows(reads.statement, (ids.encode(),), reads.timeout)
            return await wire.rows(reads.mark_statement, (), reads.timeout)
        except Exception:
            # A new connection next time, after the cooldown.
            self._refused_until = time.monotonic() + COOLDOWN_SECONDS
            self._close_wire()
            raise

    async def _connect(self) -> Wire:
        reads = self._reads
        connect = psycopg.AsyncConnection.connect(reads.conninfo, autocommit=True)
        # A task for it, as wait_for makes: once per connection.
        wire = Wire(await asyncio.wait_for(connect, reads.timeout))
        if self._closed:  # closed with its loop while connecting
            wire.close()
            raise WouldBlock("PostgreSQL's reads on this loop are closed")
        self._wire = wire
        return wire

    def _close_wire(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()

    async def close(self) -> None:
        self._closed = True
        self._close_wire()


class Wire:
    """One connection's statements, sent and read through libpq itself
    (psycopg's ``pgconn``), one at a time.

    psycopg's ``AsyncConnection.execute`` costs 48 µs of this process's CPU
    a statement of the store's, this 19 (bench/postgres_client.py, one at a
    time): a cursor, generators, and a reader added to and removed from the
    loop for each, where this keeps one reader for the connection's life.
    Each statement is prepared on its first use; rows are typed by
    psycopg's own loaders, as its cursors type them.

    Failures close the connection: a statement not answered within its
    timeout is not cancelled (nothing is waited for), a lost connection
    fails the statement out, and every later one raises."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        # Kept while its ``pgconn`` is used: psycopg warns when an open
        # connection is collected.
        self._connection = connection
        self._pgconn = connection.pgconn
        self._socket = self._pgconn.socket
        self._loop = asyncio.get_running_loop()
        self._types = Transformer(connection)
        self._prepared: dict[str, bytes] = {}
        # The statement out: its results so far, its future, its timer.
        self._results: list[pq.abc.PGresult] = []
        self._out: asyncio.Future[list[pq.abc.PGresult]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Set once closed: what every later statement raises.
        self._failed: Exception | None = None
        self._writing = False
        self._loop.add_reader(self._socket, self._readable)

    @property
    def closed(self) -> bool:
        return self._failed is not None

    async def rows(
        self, statement: str, params: Sequence[bytes], timeout: float
    ) -> Rows:
        """The rows of ``statement`` (prepared on its first use), answered
        within ``timeout`` seconds, its preparing included."""
        deadline = self._loop.time() + timeout
        try:
            name = self._prepared.get(statement)
            if name is None:
                name = f"jobstatus_loop_{len(self._prepared)}".encode()
                self._pgconn.send_prepare(name, statement.encode())
                await self._answer(deadline)
                self._prepared[statement] = name
            self._pgconn.send_query_prepared(name, params)
            (result,) = await self._answer(deadline)
        except asyncio.CancelledError:
            # Its answer would be read as the next statement's.
            self.close()
            raise
        types = self._types
        types.set_pgresult(result)
        return types.load_rows(0, result.ntuples, tuple)

    def _answer(self, deadline: float) -> asyncio.Future[list[pq.abc.PGresult]]:
        """The results of what was just sent, once all have come."""
        if self._failed is not None:
            raise self._failed
        self._out = self._loop.create_future()
        self._timer = self._loop.call_at(deadline, self._late)
        self._flush()
        return self._out

    def _flush(self) -> None:
        # A nonblocking connection may keep part of a statement back until
        # the socket takes it.
        try:
            left = self._pgconn.flush()
        except psycopg.Error as error:
            self._fail(error)
            return
        if left and not self._writing:
            self._loop.add_writer(self._socket, self._flush)
            self._writing = True
        elif not left and self._writing:
            self._loop.remove_writer(self._socket)
            self._writing = False
            # Sent, or dropped by libpq when sending failed (the server went
            # away: it then counts on a read for the error). Read at once:
            # uvloop stops watching a socket in error, and says nothing.
            self._readable()

    def _readable(self) -> None:
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
            # Idle, read only for what the server says unasked (a notice, a
            # parameter's new value, the error that precedes its closing).
            while self._out is not None and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    self._answered()
                else:
                    self._results.append(result)
        except psycopg.Error as error:
            self._fail(error)
            return
        if pgconn.status == pq.ConnStatus.BAD:
            # libpq dropped the connection without raising (a reply it
            # could not follow): its socket number is free for another's.
            self._fail(psycopg.OperationalError("the connection was lost"))

    def _answered(self) -> None:
        out, results = self._out, self._results
        self._out, self._results = None, []
        if self._timer is not None:
            self._timer.cancel()
        if out is None or out.done():
            return
        failed = [each for each in results if each.status not in _ANSWERED]
        if failed:
            message = failed[0].error_message.decode("utf-8", "replace").strip()
            out.set_exception(psycopg.OperationalError(message))
        else:
            out.set_result(results)

    def _late(self) -> None:
        self._fail(TimeoutError("PostgreSQL did not answer the loop's read in time"))

    def close(self) -> None:
        """Closes the connection now, failing a statement out."""
        self._fail(psycopg.OperationalError("the loop's connection is closed"))

    def _fail(self, error: Exception) -> None:
        """Closes the connection, a statement out failing with ``error``."""
        if self._failed is not None:
            # Closed: its socket's number may be another connection's by now.
            return
        self._failed = error
        if self._timer is not None:
            self._timer.cancel()
        out, self._out = self._out, None
        if out is not None and not out.done():
            out.set_exception(error)
        try:
            # asyncio's selector raises for a socket libpq closed already
            # while the other direction is still watched.
            with suppress(OSError):
                self._loop.remove_reader(self._socket)
            if self._writing:
                with suppress(OSError):
                    self._loop.remove_writer(self._socket)
        finally:
            # What psycopg's ``close`` does, without waiting on the loop.
            self._pgconn.finish()


_ANSWERED = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


def _refusal(error: Exception) -> WouldBlock:
    if isinstance(error, WouldBlock):
        return error
    return WouldBlock(f"PostgreSQL's read on the loop failed: {error!r}")


async def _closed(reader: _Reader[Any]) -> None:
    await reader.close()
