"""Trying a store's read on the event loop, and refusing when it would wait.

The Starlette adapter runs a ``TriesInline`` store's read inside
``attempt()``; the store, seeing ``asked()``, reads without waiting and
raises ``WouldBlock`` where it would have waited; the adapter then runs the
same call on a worker thread. A context variable, not an argument: the
service's handlers between the adapter and the store stay as they are, and
the worker thread (another context) reads the ordinary way.

A store with a client on the loop (Redis) says in its ``WouldBlock`` what it
was waiting for (``fetch``); the adapter awaits it on the loop and attempts
the call again with the outcome in ``fetched``, where the store finds it
(``fetched(key)``). Calls made here only read, so a repeat is harmless.
"""

from __future__ import annotations

from collections.abc import Hashable
from contextvars import ContextVar
from typing import Any

from .scoped import Scoped

#: A fetch's outcome: (True, its value) or (False, the exception it raised).
Outcome = tuple[bool, Any]

_fetched: ContextVar[dict[Hashable, Outcome] | None] = ContextVar(
    "jobstatus_nowait", default=None
)


def attempt(
    fetched: dict[Hashable, Outcome] | None = None,
) -> Scoped[dict[Hashable, Outcome] | None]:
    """Store calls made inside may raise ``WouldBlock`` instead of waiting;
    ``fetched``: the outcomes of fetches earlier attempts asked for."""
    return Scoped(_fetched, {} if fetched is None else fetched)


def asked() -> bool:
    """Whether the running call must not wait (it is on the event loop)."""
    return _fetched.get() is not None


def fetched(key: Hashable) -> Outcome | None:
    """The outcome of the fetch a ``WouldBlock`` named ``key`` asked for, if
    an earlier attempt of this call awaited it."""
    outcomes = _fetched.get()
    return None if outcomes is None else outcomes.get(key)
