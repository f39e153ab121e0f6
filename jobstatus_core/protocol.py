"""The store protocol: what a backend implements, and what it may add.

``Store`` is required. The optional capabilities are protocols of their own,
checked with ``isinstance`` once, when a service is built (see
``capabilities``); a store wrapper made with ``wrapping.wrap`` keeps exactly
the capabilities of the store it wraps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import InvalidRecord
from .rows import Mark, Query, Row, Stale, Tombstone, Window
from .types import Record
from .validation import JOB_ID_RULE, is_valid_job_id


@runtime_checkable
class Store(Protocol):
    """A place job records live. Sync, and the same for every backend.

    "Last written" is the time a record was last put, or for stores shared with
    other writers, the time the store observed (a file's mtime). Every change
    takes the next position in one store-wide change order.
    ``jobstatus_core.storebase.StoreBase`` derives ``get``, ``read_many`` and
    ``changed_since`` from the rest.
    """

    def get(self, job_id: str) -> Record | None:
        """The stored record, verbatim, or None."""

    def read(self, job_id: str) -> Row | None:
        """The job's row with its record, or None."""

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        """Rows with records of those of ``job_ids`` that exist."""

    def changed_since(self, cutoff: float) -> Iterable[tuple[str, Any]]:
        """``(job_id, job_status)`` of records last written at or after ``cutoff``.

        Records without a ``job_status`` field are left out.
        """

    def window(self, cutoff: float) -> Window:
        """The Toolkit listing of jobs last written at or after ``cutoff``."""

    def page(self, query: Query) -> list[Row]:
        """Up to ``query.limit`` rows after ``query.after``, in change order."""

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        """Jobs by status JSON text, for the filter of ``page`` (no position)."""

    def mark(self) -> Mark:
        """Where the change order stands now."""

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        """Write a whole record; "last written" becomes ``at`` or now.

        A reader never sees a half-written record.
        """

    def swap(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> bool:
        """Write ``record`` only if its job's version is still ``expected``.

        ``expected=None``: only if the job does not exist. One atomic step
        against every other writer of the store; False when it did not apply.
        """

    def close(self) -> None:
        """Release connections and threads. Idempotent."""


@runtime_checkable
class Versioned(Protocol):
    """A store whose ``swap`` can tell the version it wrote, so a writer that
    changes the same job again (the recorder) swaps at it without reading
    the job in between: one round trip per change instead of two."""

    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        """``swap``, returning the job's new version (the one ``read`` would
        give now), or None when it did not apply."""


@runtime_checkable
class Presence(Protocol):
    """A store that can be missing while the service runs (files: ``jobs/``).

    ``jobs/status`` then answers ``404 Jobs directory not found``. Asked only
    when the listing is empty or fails: a store that lists jobs must be there
    (the file store's listings are read from ``jobs/``, and empty or failing
    when it is gone).
    """

    def exists(self) -> bool:
        """Whether the store is there at all."""


@runtime_checkable
class RecordTexts(Protocol):
    """A store that keeps each record as the JSON text answers write.

    ``job/status`` and ``GET /v1/job/{id}`` put the text in their answers as
    it is, neither parsed nor encoded again. The text must be exactly
    ``jsontext.encode`` of the record: a store whose texts others may write
    too (SQLite) answers with a kept text only when it can tell it is its
    own (a digest), and parses and encodes the rest.
    """

    def read_text(self, job_id: str) -> tuple[Row, str] | None:
        """The job's row (its record left out) and ``jsontext.encode`` of its
        record, read together; None: no such job."""


@runtime_checkable
class AsyncReads(Protocol):
    """A ``RecordTexts`` store that can also make its polled reads on the
    running event loop, awaiting a connection of its own (Redis's pipe).

    ``job/status``, ``GET /v1/job/{id}`` and ``jobs/status`` are then
    answered from one awaited read: the request read once, the store once,
    the answer made once (``contract.OneRead``), where a store read tried
    on the loop (``nowait``) refuses, is awaited, and the whole handler
    runs again. Each raises ``WouldBlock`` when it cannot read there (a
    client it cannot use on the loop, a connection lost under the read):
    the caller then reads the usual way. Other errors are the sync call's.
    """

    async def read_text_async(self, job_id: str) -> tuple[Row, str] | None:
        """What ``read_text`` answers, read on the running event loop."""

    async def mark_async(self) -> Mark:
        """What ``mark`` answers, read on the running event loop."""


@runtime_checkable
class Enumerable(Protocol):
    """A store that can list every job it holds; the built-in stores all can.

    Used to copy jobs between stores (``jobstatus migrate``), not to serve.
    """

    def jobs(self) -> Iterable[tuple[str, float]]:
        """``(job_id, last written)`` of every job, records without a status too."""


@runtime_checkable
class Notifying(Protocol):
    """A store that says when it may have changed — through any instance
    sharing it — so waits and event streams wake at once instead of polling
    its mark."""

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from any thread, without blocking it) after each
        change the store sees; returns a function that stops the calls."""


@runtime_checkable
class Expiring(Protocol):
    """A store retention can purge: an expired job is removed and leaves a
    tombstone for a while (SPEC §14).

    Tombstones are apart from jobs: ``read``, ``read_many``, ``page``,
    ``counts``, ``window``, ``changed_since`` and ``jobs`` never show them. A
    ``put`` or ``swap`` of an expired job's id makes it alive again and drops
    its tombstone (``swap(expected=None)`` applies: the job does not exist).
    Times come from the caller, never from the store's clock, so a policy of
    days is tested in milliseconds.
    """

    def stale(self, query: Stale) -> list[Row]:
        """Live jobs of ``query``, oldest "last written" first (ties by job
        id), at most ``query.limit``, without records."""

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        """For each row, in one atomic step against every other writer and
        purger: if its job's version is still ``row.version``, remove the job
        and leave the tombstone ``(row.job_id, row.status, at)`` at the next
        position of the change order. A job changed or expired meanwhile is
        left as it is. Returns the tombstones left, in change order."""

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        """The tombstones of those of ``job_ids`` that have one."""

    def buried(self, query: Query) -> list[Tombstone]:
        """Tombstones after ``query.after`` in change order, of
        ``query.statuses`` (None: all), at most ``query.limit``: the feed's
        ``expired`` events. ``cutoff`` and ``records`` do not apply."""

    def forget(self, *, before: float, limit: int) -> int:
        """Drop at most ``limit`` tombstones that expired before ``before``
        (their jobs become unknown); returns how many were dropped."""


@runtime_checkable
class Indexed(Protocol):
    """A store that keeps an index of its jobs in the process (the file
    store's): ``/metrics`` reports its size."""

    def indexed(self) -> int:
        """How many jobs the index holds now."""


class Inline:
    """Declares a store whose calls never wait on I/O (``memory://``).

    A nominal marker, not a protocol: the Starlette adapter calls such a store
    on the event loop instead of a worker thread, which would cost more than
    the call.
    """


class ProcessLocal:
    """Declares a store whose jobs live in the process that opened it
    (``memory://``): another process opening its URL has a store of its own,
    empty. ``jobstatus serve --workers N`` refuses it, since each worker
    would answer from a store of its own. A nominal marker, like ``Inline``.
    """


class TriesInline:
    """Declares a store whose reads can be tried on the event loop: inside
    ``nowait.attempt()`` it raises ``WouldBlock`` instead of waiting (on the
    disk, a lock, or longer than its budget), having changed nothing.

    A nominal marker, like ``Inline``: the Starlette adapter tries such a
    store's reads on the loop and runs the ones that would block again on a
    worker thread (docs/writing-a-store.md).
    """


@runtime_checkable
class Checkable(Protocol):
    """A store that can prove, at start, that it will serve: the built-in
    network and file stores can. ``jobstatus serve`` calls it before it says
    it is serving, so a wrong password or an unreadable directory stops the
    start instead of failing every request."""

    def check(self) -> None:
        """Raise ``ConfigError`` (a wrong setting) or ``StoreError``."""


@runtime_checkable
class Advising(Protocol):
    """A store whose server can be set up so that it loses jobs or the
    change order unseen (Redis: an ``allkeys-*`` eviction policy, ``INFO``
    refused). ``jobstatus serve`` logs what it says as warnings at start;
    the server is the operator's, so it is not refused."""

    def advice(self) -> list[str]:
        """One line for each such setting; none when all is well. A setting
        the store may not read is itself a line, never an error."""


@runtime_checkable
class ForkSafe(Protocol):
    """A store that keeps working in a child process after ``os.fork()``
    (memory, Redis). Others (file: observer threads; SQLite: a connection)
    must be opened after the fork; a service built before one refuses to
    use them in the child (see ``jobstatus_adapters.service``)."""

    survives_fork: bool


#: How deep the objects and arrays of a record may nest. Every reader parses
#: a record back with ``json``, whose parser counts each level against the
#: recursion limit (1,000) from wherever it is called: a record written 970
#: deep was read on one thread and refused on another, with a deeper stack.
MAX_RECORD_DEPTH = 256


def checked_job_id(record: Mapping[str, Any]) -> str:
    """The job id of a record about to be put, once the record is one every
    reader can read back (its ``job_id``, its ``job_status``, nested at most
    ``MAX_RECORD_DEPTH`` deep); raises ``InvalidRecord``."""
    if not isinstance(record, Mapping):
        raise InvalidRecord("a record must be a JSON object")
    job_id = record.get("job_id")
    if not is_valid_job_id(job_id):
        raise InvalidRecord(f"record job_id must be {JOB_ID_RULE}")
    if "job_status" not in record:
        raise InvalidRecord("record job_status is required")
    if not nests_within(record, MAX_RECORD_DEPTH):
        raise InvalidRecord(
            f"record nests objects and arrays deeper than {MAX_RECORD_DEPTH} levels"
        )
    assert isinstance(job_id, str)
    return job_id


def nests_within(value: Any, limit: int) -> bool:
    """Whether ``value``'s objects and arrays nest at most ``limit`` deep (a
    scalar: 0, an empty list: 1)."""
    if not isinstance(value, (Mapping, list, tuple)):
        return True
    # Iterative, depth first: a recursive walk would fail on the values it
    # must refuse, and one by levels could hold a level of millions.
    containers: list[tuple[Any, int]] = [(value, 1)]
    while containers:
        value, depth = containers.pop()
        if depth > limit:
            return False
        items = value.values() if isinstance(value, Mapping) else value
        containers.extend(
            (item, depth + 1)
            for item in items
            if isinstance(item, (Mapping, list, tuple))
        )
    return True


#: The last second of year 9999: a later "last written" is a mistake (a time
#: in milliseconds), and no HTTP date can say it.
LATEST_STAMP = 253_402_300_799.0


def checked_at(at: float | None) -> float | None:
    """``at`` of a put, checked: a finite time from 1970 to year 9999."""
    if at is None:
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise InvalidRecord("at must be a number of seconds since the epoch")
    if not 0 <= at <= LATEST_STAMP:
        raise InvalidRecord(
            f"at must be a finite time from 0 to {LATEST_STAMP:.0f} (seconds,"
            " not milliseconds)"
        )
    return float(at)
