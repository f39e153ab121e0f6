"""``postgresql://user:pass@host:port/db``: a PostgreSQL database shared by
several jobstatus instances, through psycopg 3 and a connection pool.

jobstatus keeps its own objects in its own schema (``?schema=``, default
``jobstatus``) and never touches anything else in the database. With the
table named ``T`` (``?table=``, default ``jobs``):

- ``T``: ``job_id`` primary key, ``job_status`` (JSON text, NULL when the
  record has none), ``updated_at`` (epoch seconds), ``record`` (the whole
  record as JSON text, verbatim) and ``position`` (the job's last change in
  the change order);
- ``T_meta``: one row: ``epoch`` (random, set when the table is created, so
  versions and cursors of a dropped and recreated store never match again),
  ``head`` (the last position handed out) and ``schema_version``;
- ``T_counts``: jobs by status, kept by the trigger ``T_changed``, which
  also sends ``pg_notify`` on the store's channel in the writing
  transaction: every instance listening wakes when it commits;
- ``T_tombstones`` (retention): what expired jobs leave, ``job_id`` primary
  key, ``status``, ``expired_at`` and ``position``; apart from ``T``, so no
  query of jobs meets one and none holds a record. An expiry deletes the
  job's row (the trigger notifies) and takes the next position like a write;
  ``T_changed`` drops an id's tombstone when the id is inserted again, in the
  writing statement.

Every write is one statement that first bumps ``T_meta.head``: the row lock
it takes orders writers, so positions become visible in the order they were
given and a reader paging by position never skips a change that commits
late (a sequence's ``nextval`` is not ordered by commit). The schema is
created and migrated forward under ``pg_advisory_xact_lock``, so instances
starting at once migrate it once. PostgreSQL unreachable or timing out
raises ``StoreUnavailable`` (answered 503); the pool reconnects by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import select
import threading
import time
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Iterator,
    Mapping,
    Sequence,
)
from functools import partial
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import conninfo as pg_conninfo

from jobstatus_core import (
    ConfigError,
    Mark,
    Query,
    Row,
    Stale,
    StoreError,
    StoreUnavailable,
    Tombstone,
    VersionedStoreBase,
    Window,
    WouldBlock,
    batchreads,
    checked_at,
    checked_job_id,
    jsontext,
)
from jobstatus_core.registry import redact
from jobstatus_core.storebase import parsed_version

from . import storedjson
from .answertexts import AnswerTexts
from .outage import Outage, Unreachable
from .postgresasync import LoopReads, Rows
from .postgressql import MIGRATIONS, SCHEMA_VERSION, Statements
from .subscribers import ListenerThread, Subscribers
from .urloptions import parse_store_url

logger = logging.getLogger("jobstatus.postgres")

DEFAULT_SCHEMA = "jobstatus"
DEFAULT_TABLE = "jobs"
# A status endpoint must answer quickly, even "unavailable": fail fast.
DEFAULT_TIMEOUT_SECONDS = 1.0
DEFAULT_MAX_CONNECTIONS = 10

#: Schema and table names: plain lower-case identifiers, short enough that
#: every derived name (``T_status_position``, the channel ``S.T``) fits in
#: PostgreSQL's 63 bytes, and safe to quote without escaping.
NAME_RULE = re.compile(r"[a-z_][a-z0-9_]{0,30}")

#: How long a migration may wait for another instance's to finish.
MIGRATION_TIMEOUT_SECONDS = 60.0
#: A listening connection silent this long is asked a ``SELECT 1``, so that
#: a connection lost without a word is noticed.
LISTEN_HEARTBEAT_SECONDS = 5.0
#: How long the pool tries to reconnect, its wait doubling from 1 s, before
#: it stops and lets the next request try at once: with psycopg_pool's 300 s
#: the tries of a long outage came 32 and 64 s apart, and the store kept
#: answering 503 for up to that long after the server was back.
RECONNECT_SECONDS = 5.0
#: Waits between attempts to get a lost listening connection back.
LISTEN_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)

T = TypeVar("T")


class PostgresStore(VersionedStoreBase):
    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        table: str = DEFAULT_TABLE,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        **libpq: str,
    ) -> None:
        """``url`` is a libpq URL without jobstatus's options; ``libpq`` are
        further libpq parameters (``sslmode``, ``host`` …)."""
        for what, name in (("schema", schema), ("table", table)):
            if not NAME_RULE.fullmatch(name):
                raise ConfigError(
                    f"PostgreSQL store: {what} {name!r} must be 1-31 characters"
                    " of a-z 0-9 _, not starting with a digit"
                )
        self.schema = schema
        self.table = table
        self.timeout = timeout
        self.channel = f"{schema}.{table}"
        self._sql = Statements(schema, table, self.channel)
        self._setup_key = _lock_key(self.channel)
        self._conninfo = _conninfo(url, timeout, libpq)
        self._ready = False
        self._setup_lock = threading.Lock()
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=max(1, max_connections),
            open=False,
            timeout=timeout,
            reconnect_timeout=RECONNECT_SECONDS,
            name=f"jobstatus-postgres-{self.channel}",
        )
        # Opened on first use: a store made and never used (a wrong password
        # found by ``check``) starts no thread and makes no connection.
        self._pool_open = False
        self._subscribers = Subscribers(
            partial(_Listener, self._conninfo, self.channel), timeout
        )
        self._closed = False
        # Calls refused at once while PostgreSQL is down (``outage``).
        self._outage = Outage(timeout)
        # ``AsyncReads``: the mark and polled jobs read on each event loop's
        # own connection, one statement for the reads asked meanwhile.
        self._loop_reads = LoopReads(
            self._conninfo, self._sql.loop_reads, self._sql.mark, _Found, timeout
        )
        # ``read_text``'s answers by stored text (a polled job's is not
        # parsed again).
        self._answer_texts = AnswerTexts()

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """``postgresql://[user[:password]@]host[:port]/db[?schema=…][&table=…]
        [&timeout=S]``; the options are those ``urloptions.OPTIONS`` declares."""
        parsed = parse_store_url(url)
        options = dict(parsed.options)
        schema = options.pop("schema", DEFAULT_SCHEMA)
        table = options.pop("table", DEFAULT_TABLE)
        timeout = options.pop("timeout", DEFAULT_TIMEOUT_SECONDS)
        max_connections = options.pop("max_connections", DEFAULT_MAX_CONNECTIONS)
        try:
            return cls(
                url.split("?", 1)[0],
                schema=schema,
                table=table,
                timeout=timeout,
                max_connections=max_connections,
                **options,
            )
        except ConfigError as exc:
            raise parsed.fail(str(exc).removeprefix("PostgreSQL store: ")) from None

    # -- reading -------------------------------------------------------------

    def read(self, job_id: str) -> Row | None:
        found = self._read_values(job_id)
        return None if found is None else _row(found, with_record=True)

    def read_text(self, job_id: str) -> tuple[Row, str] | None:
        """``RecordTexts``: ``read``'s row (its record left out) and the
        record as answers write it, a stored text seen before not parsed
        again (``answertexts``)."""
        found = self._read_values(job_id)
        return None if found is None else self._text_of(found)

    async def read_text_async(self, job_id: str) -> tuple[Row, str] | None:
        """``AsyncReads``: ``read_text`` on the running loop's connection,
        in one statement with the other reads asked meanwhile
        (``postgresasync``)."""
        values = (await self._loop_found(job_id)).rows.get(job_id)
        return None if values is None else self._text_of(values)

    async def mark_async(self) -> Mark:
        """``AsyncReads``: ``mark`` read as ``read_text_async`` reads."""
        return (await self._loop_found(None)).mark

    def _loop_found(self, job_id: str | None) -> Awaitable[_Found]:
        if not self._ready or self._closed:
            # The schema is made or checked by the first read on a thread.
            raise WouldBlock("PostgreSQL's schema is checked on a thread first")
        return self._loop_reads.found(job_id)

    def _read_values(self, job_id: str) -> tuple[Any, ...] | None:
        """``Statements.read``'s row of the job, shared by a batch's calls
        (``read`` and ``read_text`` alike). A job not found is not shared:
        a caller may look its tombstone up next, and must not put a fresh
        lookup beside an older "none"."""
        found = self._shared(("read", job_id), self._sql.read, (job_id,), keep=bool)
        return found[0] if found else None

    def _text_of(self, values: Sequence[Any]) -> tuple[Row, str]:
        """``read``'s columns as ``read_text`` answers them."""
        return _row(values, with_record=False), self._answer_texts.of(
            values[0], values[5]
        )

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        found = self._fetch(self._sql.read_many, (list(job_ids),))
        rows = (_row(values, with_record=True) for values in found)
        return {row.job_id: row for row in rows}

    def window(self, cutoff: float) -> Window:
        found = self._fetch(self._sql.window, (cutoff,))
        members = [f'"{job_id}":{_status(status)}' for job_id, status, _ in found]
        return Window(members, found[0][2] if found else None)

    def page(self, query: Query) -> list[Row]:
        statuses: list[str | None] = (
            [None] if query.statuses is None else [*sorted(query.statuses)]
        )
        window = () if query.cutoff is None else (query.cutoff,)
        params: list[Any] = []
        for status in statuses:
            params += [query.after, *(() if status is None else (status,))]
            params += [*window, query.limit]
        if query.statuses is not None:
            if not statuses:
                return []
            params.append(query.limit)
        sql = self._sql.page(
            statuses=0 if query.statuses is None else len(statuses),
            window=query.cutoff is not None,
            records=query.records,
        )
        found = self._fetch(sql, tuple(params))
        return [_row(values, with_record=query.records) for values in found]

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        if cutoff is None:
            found = self._fetch(self._sql.kept_counts, ())
        else:
            found = self._fetch(self._sql.window_counts, (cutoff,))
        counts: dict[str, int] = {}
        for status, n in found:
            key = _status(status)
            counts[key] = counts.get(key, 0) + int(n)
        return {
            status: n
            for status, n in counts.items()
            if n > 0 and (statuses is None or status in statuses)
        }

    def mark(self) -> Mark:
        ((epoch, head, server),) = self._shared("mark", self._sql.mark, ())
        return Mark(epoch, int(head), server)

    def jobs(self) -> list[tuple[str, float]]:
        return [(job_id, float(at)) for job_id, at in self._fetch(self._sql.jobs, ())]

    # -- writing -------------------------------------------------------------

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        self._write(self._sql.put, _values(record, at))

    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        values = _values(record, at)
        if expected is None:
            found = self._fetch(self._sql.create, values)
        else:
            version = parsed_version(expected)
            if version is None:
                return None  # not a version this store gave: it matches no job
            epoch, expected_position = version
            job_id, status, stamp, text = values
            found = self._fetch(
                self._sql.swap, (epoch, status, stamp, text, job_id, expected_position)
            )
        if not found:
            return None
        ((epoch, position),) = found
        return f"{epoch}-{position:x}"

    # -- retention -------------------------------------------------------------

    def stale(self, query: Stale) -> list[Row]:
        if query.statuses is None:
            params: tuple[Any, ...] = (
                query.before,
                sorted(query.other_than),
                query.limit,
            )
            found = self._fetch(self._sql.stale_other, params)
        else:
            statuses = sorted(query.statuses - query.other_than)
            params = (statuses, query.before, query.limit, query.limit)
            found = self._fetch(self._sql.stale_some, params)
        return [_row(values, with_record=False) for values in found]

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        versions = [
            (row.job_id, version)
            for row in rows
            if (version := parsed_version(row.version))
        ]

        def bury(conn: psycopg.Connection[Any]) -> list[Tombstone]:
            # READ COMMITTED, one transaction per batch. The meta row's lock,
            # taken first as every write does, orders the batch among all
            # writers and purgers of every instance; each DELETE then sees
            # every change committed before it and removes a job only at the
            # version purge read, so a job is expired once and a rewritten
            # one stays.
            with conn.transaction():
                row = conn.execute(self._sql.lock_head).fetchone()
                assert row is not None
                head, epoch = row
                wanted = [
                    (job_id, position)
                    for job_id, (of, position) in versions
                    if of == epoch
                ]
                if not wanted:
                    return []
                ids, positions = zip(*wanted, strict=True)
                found = conn.execute(
                    self._sql.expire,
                    {
                        "ids": list(ids),
                        "positions": list(positions),
                        "head": head,
                        "at": at,
                    },
                ).fetchall()
            return [_tombstone(values) for values in found]

        return self._run(bury)

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        found = self._fetch(self._sql.tombstones, (list(job_ids),))
        return {values[0]: _tombstone(values) for values in found}

    def buried(self, query: Query) -> list[Tombstone]:
        if query.statuses is None:
            found = self._fetch(self._sql.buried, (query.after, query.limit))
        else:
            params = (query.after, sorted(query.statuses), query.limit)
            found = self._fetch(self._sql.buried_some, params)
        return [_tombstone(values) for values in found]

    def forget(self, *, before: float, limit: int) -> int:
        return max(0, self._write(self._sql.forget, (before, limit)))

    # -- capabilities ----------------------------------------------------------

    def check(self) -> None:
        """Connect once and bring the schema up to date: a wrong password, a
        missing database or a missing privilege stops the start."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True):
                pass
        except psycopg.Error as exc:
            raise _connect_failure(exc) from None
        try:
            self._setup()
        except StoreError as exc:
            raise ConfigError(str(exc)) from None

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls ``callback`` after each change any instance commits, through
        one listening connection per store; a lost connection is got back and
        every callback is called once then (something may have been missed)."""
        return self._subscribers.add(callback)

    def close(self) -> None:
        if self._closed:
            return
        with self._setup_lock:
            self._closed = True
        self._subscribers.close()
        self._loop_reads.close()
        if self._pool_open:
            self._pool.close()

    # -- plumbing --------------------------------------------------------------

    def _shared(
        self,
        key: Hashable,
        sql: str,
        params: Sequence[Any],
        keep: Callable[[list[tuple[Any, ...]]], bool] | None = None,
    ) -> list[tuple[Any, ...]]:
        """``_fetch``, read once for the calls of a batch a store thread
        runs (``batchreads``): a turn's polls of the mark, or of one job,
        then cost one statement."""
        return batchreads.shared(
            self, key, lambda: self._fetch(sql, params, shared=True), keep
        )

    def _fetch(
        self, sql: str, params: Sequence[Any], *, shared: bool = False
    ) -> list[tuple[Any, ...]]:
        def fetch(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        return self._run(fetch, shared=shared)

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        def write(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(sql, params).rowcount

        return self._run(write)

    def _run(
        self, action: Callable[[psycopg.Connection[Any]], T], *, shared: bool = False
    ) -> T:
        if not shared:
            # Any other statement may write (``swap``'s, a purge's): what
            # the batch read before it no longer stands for what follows.
            batchreads.forget()
        with self._outage.call():
            if not self._ready:
                self._setup()
            with _translated(), self._connection() as conn:
                return action(conn)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, as ``pool.connection()`` gives it, but one
        the server closed (a restart) is handed back closed, which the pool
        replaces, and another taken at once: the first request after an
        outage answers. The pool's own check (``check=``) waits a second or
        more after a failed one, past a request's timeout (a 503 for the
        first request after every restart)."""
        deadline = time.monotonic() + self.timeout
        while True:
            conn = self._pool.getconn(max(deadline - time.monotonic(), 0.001))
            if not _closed_by_server(conn):
                break
            conn.close()
            self._pool.putconn(conn)
        try:
            with conn:
                yield conn
        finally:
            self._pool.putconn(conn)

    def _setup(self) -> None:
        """Create or migrate the schema once per instance, under an advisory
        lock held until the migration commits."""
        with self._setup_lock:
            if self._ready:
                return
            if self._closed:
                raise StoreError("PostgreSQL store: closed")
            if not self._pool_open:
                self._pool.open(wait=False)
                self._pool_open = True
            with _translated(), self._connection() as conn:
                if self._schema_version(conn) != SCHEMA_VERSION:
                    with conn.transaction():
                        conn.execute(
                            "SELECT set_config('statement_timeout', %s, true)",
                            (str(int(MIGRATION_TIMEOUT_SECONDS * 1000)),),
                        )
                        conn.execute(
                            "SELECT pg_advisory_xact_lock(%s)", (self._setup_key,)
                        )
                        self._migrate(conn)
            self._ready = True

    def _schema_version(self, conn: psycopg.Connection[Any]) -> int:
        """0 for no table yet; raises ``ConfigError`` for a table that is not
        jobstatus's, or one of a newer jobstatus."""
        sql = self._sql
        names = (sql.jobs_table, sql.meta_table, sql.counts_table, sql.tombstones_table)
        found = conn.execute(
            "SELECT " + ", ".join(["to_regclass(%s) IS NOT NULL"] * len(names)),
            names,
        ).fetchone() or (False,) * len(names)
        there = [name for name, exists in zip(names, found, strict=True) if exists]
        if sql.meta_table not in there:
            if there:
                raise ConfigError(
                    f"PostgreSQL store: {there[0]} is not a jobstatus table"
                    " (there is no meta table); it was left unchanged"
                )
            return 0
        columns = conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attname IN ('epoch', 'head', 'schema_version')"
            " AND NOT attisdropped",
            (sql.meta_table,),
        ).fetchone()
        if columns is None or columns[0] != 3:
            raise ConfigError(
                f"PostgreSQL store: {sql.meta_table} is not a jobstatus table"
                " (it lacks epoch, head or schema_version); it was left unchanged"
            )
        row = conn.execute(f"SELECT schema_version FROM {sql.meta_table}").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"PostgreSQL store: {sql.jobs_table} has schema version {version},"
                f" newer than this jobstatus ({SCHEMA_VERSION}); upgrade jobstatus"
            )
        return version

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        exists = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
        ).fetchone()
        if not exists:
            # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the
            # CREATE privilege on the database even when the schema is there.
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        version = self._schema_version(conn)
        for step in MIGRATIONS[version:]:
            for statement in step(self._sql):
                conn.execute(statement)
        conn.execute(
            f"UPDATE {self._sql.meta_table} SET schema_version = %s",
            (SCHEMA_VERSION,),
        )


class _Listener(ListenerThread):
    """The store's ``Listener``: one listening connection, and the thread
    reading it while anybody subscribes. Started when made."""

    def __init__(self, conninfo: str, channel: str, notify: Callable[[], None]) -> None:
        super().__init__("jobstatus-postgres-listen", notify)
        self._conninfo = conninfo
        self._channel = channel
        # ``stop`` writes to it: the thread's select wakes at once.
        self._wake_r, self._wake_w = os.pipe()
        self._stopped_by_callback = False
        try:
            self._start()
        except BaseException:
            self._close_pipe()
            raise

    def stop(self) -> None:
        super().stop()
        if threading.current_thread() is self._thread:
            # A callback unsubscribed: the thread ends once it returns,
            # and closes the pipe (``_listen``).
            self._stopped_by_callback = True
        else:
            self._close_pipe()

    def _wake(self) -> None:
        os.write(self._wake_w, b"x")

    def _close_pipe(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _listen(self) -> None:
        try:
            self._listen_until_stopped()
        finally:
            if self._stopped_by_callback:
                self._close_pipe()

    def _listen_until_stopped(self) -> None:
        delays: Iterator[float] = iter(())
        wake_r = self._wake_r
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    self._listening.set()
                    delays = iter(LISTEN_RETRY_DELAYS)
                    # Changes made while not listening are not known:
                    # everybody looks again, once.
                    self._notify()
                    self._serve(conn, wake_r)
            except psycopg.Error as exc:
                logger.warning(
                    "PostgreSQL change notifications lost: %s", _one_line(exc)
                )
            delay = next(delays, LISTEN_RETRY_DELAYS[-1])
            if self._stopping.wait(delay):
                return

    def _serve(self, conn: psycopg.Connection[Any], wake_r: int) -> None:
        socket = conn.fileno()
        while not self._stopping.is_set():
            ready, _, _ = select.select(
                [socket, wake_r], [], [], LISTEN_HEARTBEAT_SECONDS
            )
            if wake_r in ready:
                return
            if not ready:
                conn.execute("SELECT 1")  # fails if the connection is gone
            # Also reads what the heartbeat left behind.
            if any(True for _ in conn.notifies(timeout=0)):
                self._notify()


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """Whether a pooled connection is dead: closed, or closed by the server.

    A connection the server closed (a restart) has its end of file waiting:
    readable while idle. Only then is it asked a round trip, which tells;
    a live idle one costs no round trip (a check on every use doubled a
    read's time).
    """
    if conn.closed:
        return True
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if not readable:
        return False
    try:
        psycopg_pool.ConnectionPool.check_connection(conn)
    except psycopg.Error:
        return True
    return False


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """psycopg's errors as the library's own, one line each."""
    try:
        yield
    except psycopg_pool.PoolTimeout:
        # Down, or every connection busy for the whole timeout: either way
        # the requests behind it would wait as long (``outage``).
        raise Unreachable(
            "PostgreSQL unreachable: no connection within the timeout"
        ) from None
    except psycopg.errors.QueryCanceled:
        raise StoreUnavailable("PostgreSQL timed out") from None
    except psycopg.OperationalError as exc:
        raise Unreachable(f"PostgreSQL unreachable: {_one_line(exc)}") from None
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL error: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """A libpq message on one line (it spans several when it tried several
    addresses), at most 300 characters."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines()]
    text = "; ".join(dict.fromkeys(line for line in lines if line))
    return text[:300] or type(exc).__name__


def _connect_failure(exc: psycopg.Error) -> ConfigError | Unreachable:
    """A wrong setting is a ``ConfigError``; anything else is ``Unreachable``:
    not a setting to fix, perhaps, since a retry may find the server up."""
    text = _one_line(exc)
    if "password authentication failed" in text or "no password supplied" in text:
        return ConfigError(
            f"PostgreSQL authentication failed (wrong password?): {text}"
        )
    if re.search(r'database "[^"]*" does not exist', text):
        return ConfigError(f"PostgreSQL database missing: {text}")
    return Unreachable(f"PostgreSQL unreachable: {text}")


def _conninfo(url: str, timeout: float, libpq: Mapping[str, str]) -> str:
    """The libpq connection string: the URL, the caller's parameters, and the
    timeouts that make an outage an answer instead of a hang."""
    milliseconds = str(max(1, int(timeout * 1000)))
    try:
        conninfo = pg_conninfo.make_conninfo(
            url,
            **{
                "application_name": "jobstatus",
                # libpq counts whole seconds, at least 2; the pool's own
                # timeout bounds a request's wait to ``timeout``.
                "connect_timeout": str(max(2, math.ceil(timeout))),
                "options": f"-c statement_timeout={milliseconds}",
                "tcp_user_timeout": milliseconds,
                "keepalives_idle": str(max(1, math.ceil(timeout))),
                "keepalives_interval": "1",
                "keepalives_count": "3",
                **libpq,
            },
        )
        ports = pg_conninfo.conninfo_to_dict(conninfo).get("port") or ""
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"store URL {redact(url)!r}: {_one_line(exc).split(':')[0]}"
        ) from None
    # libpq would only say so when connecting, request after request.
    if not all(port.isdigit() for port in str(ports).split(",") if port):
        raise ConfigError(f"store URL {redact(url)!r}: the port must be a number")
    return conninfo


def _lock_key(channel: str) -> int:
    """The advisory lock of this schema and table: a signed 64-bit number."""
    digest = hashlib.sha1(f"jobstatus:{channel}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _status(text: str) -> str:
    """A stored status as the answers' JSON text. The table is jobstatus's
    own: its statuses are ``jsontext``'s, and only non-ASCII text (written
    by hand) needs escaping."""
    return storedjson.ascii_only(text)


def _values(record: Mapping[str, Any], at: float | None) -> tuple[str, str, float, str]:
    """The columns a write stores: job_id, job_status, updated_at, record."""
    job_id = checked_job_id(record)
    at = checked_at(at)
    return (
        job_id,
        # The answers' own encoding: listings join this text as it is.
        jsontext.encode(record["job_status"]),
        time.time() if at is None else at,
        json.dumps(record, allow_nan=False),
    )


class _Found:
    """A statement of ``Statements.loop_reads`` parsed: the mark, and
    ``read``'s columns by job id (none from ``Statements.mark``)."""

    __slots__ = ("mark", "rows")

    def __init__(self, rows: Rows) -> None:
        epoch, head, server = rows[0][:3]
        self.mark = Mark(epoch, int(head), server)
        # The mark's statement has its three columns only: no jobs asked.
        joined = len(rows[0]) > 3
        self.rows = {
            values[3]: values[3:] for values in rows if joined and values[3] is not None
        }


def _tombstone(values: Sequence[Any]) -> Tombstone:
    """A ``Tombstone`` from ``job_id, status, expired_at, position``."""
    job_id, status, expired_at, position = values
    return Tombstone(job_id, _status(status), float(expired_at), int(position))


def _row(values: Sequence[Any], *, with_record: bool) -> Row:
    """A ``Row`` from ``Statements.columns`` (and ``record`` after them)."""
    job_id, status, updated_at, position, epoch = values[:5]
    return Row(
        job_id,
        None if status is None else _status(status),
        float(updated_at),
        f"{epoch}-{position:x}",
        int(position),
        storedjson.record(job_id, values[5]) if with_record else None,
    )
