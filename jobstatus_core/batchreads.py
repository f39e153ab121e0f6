"""Reads shared by the calls of one batch that a store thread runs.

The Starlette adapter hands the store calls made in one turn of the event
loop to a worker thread together (``StoreThreads``): every call of such a
batch was asked, its request had arrived, before the batch started. A value
read while the batch runs is therefore as new as each of its calls needs,
and read once it may answer them all, as a turn's requests on Redis share
one round trip. Under load, the polls of a turn then cost a store one read
of its mark (or of one job polled by many) instead of one each.

Outside a batch (the WSGI adapter, a direct call, the purger's thread)
nothing is shared. A store opts in by reading through ``shared``, and calls
``forget`` before any other statement, so that a write made inside a batch
is never followed by a value read before it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

from .scoped import Scoped

T = TypeVar("T")

#: The running batch's values by (owner's id, key); None outside a batch. A
#: context variable: a worker thread has a context of its own, so another
#: thread (or the event loop's) never sees this batch's values.
_values: ContextVar[dict[tuple[int, Hashable], Any] | None] = ContextVar(
    "jobstatus_batchreads", default=None
)


def batch() -> Scoped[dict[tuple[int, Hashable], Any] | None]:
    """Around one batch of calls on this thread, each asked before it
    started: what they read through ``shared`` is shared until it ends."""
    return Scoped(_values, {})


def shared(
    owner: object,
    key: Hashable,
    read: Callable[[], T],
    keep: Callable[[T], bool] | None = None,
) -> T:
    """``read()``'s value, read once per batch for ``owner`` and ``key``
    (a read that raises is not kept, nor one ``keep`` refuses: the next
    call reads again); outside a batch, ``read()``."""
    values = _values.get()
    if values is None:
        return read()
    # ``owner`` outlives the batch (the store serving it), so its id stays
    # its own while the value is kept.
    slot = (id(owner), key)
    if slot in values:
        value: T = values[slot]
        return value
    value = read()
    if keep is None or keep(value):
        values[slot] = value
    return value


def forget() -> None:
    """Drop what this thread's batch has shared: called before a statement
    that may change what was read."""
    values = _values.get()
    if values:
        values.clear()
