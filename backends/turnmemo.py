"""Values read on the event loop, good until the loop has gone round once.

A kept answer is given again only against proof, read after the request
arrived, that the job has not changed. Reading the proof once per request
is more than that needs: a value read on the loop at a moment ``m`` may
stand for every callback the loop runs before a callback scheduled at ``m``
(``call_soon``) — asyncio and uvloop run their ready callbacks in the order
they were scheduled, so each of those was scheduled before ``m``, by a
request whose bytes had arrived by then. Under load a turn of the loop
handles a request from each connection that sent one; they share one proof.

A callback can do more than answer one request, though: a test's task may
call an app in process (httpx's ``ASGITransport``), write to the store some
other way, and call it again, all in one step. So a value is given only

- inside a read the adapter tries on the loop (``nowait.asked()``), to
  another task than the one that read it (each request a server hands the
  app is a task of its own; the task that read it may have written since);
- until a store that keeps such values (SQLite, the file store) writes
  in this process (``wrote()``), through any of its objects;
- on a loop without a task factory: an eager task (Python 3.12's
  ``eager_task_factory``) starts a request's handler as its bytes arrive,
  ahead of the callbacks already scheduled.

What this leaves: a write by another process, or by code of this one that
does not go through a store, made in the same step of a task as an in-process
call of the app that follows it, while another task read the value in the
same turn (docs/stores.md, "Kept answers").
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from jobstatus_core import nowait

K = TypeVar("K")
V = TypeVar("V")

#: Writes the stores of this process have made (``wrote``): a turn's values
#: stand only while it has not moved.
_writes = 0


def wrote() -> None:
    """Called by a store after each write it makes (also one that failed:
    part of it may have been done)."""
    global _writes
    _writes += 1


# A forked child inherits the parent's turn, and a copy of its loop that
# says it runs and never gets to end it: the child starts with none.
os.register_at_fork(after_in_child=wrote)


class _Turn(Generic[K, V]):
    __slots__ = ("loop", "thread", "values", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop, writes: int) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.writes = writes
        # key -> (value, the task that read it)
        self.values: dict[K, tuple[V, object]] = {}

    def running_here(self) -> bool:
        """Whether this turn's loop is the one running on this thread. On
        the thread the turn was read on, its loop, while it runs, is the
        running one (one loop runs on a thread at a time). Not asked of
        asyncio: its get_running_loop() makes a getpid() system call.
        What this cannot tell: the loop stopped with the turn still open,
        and run on another thread while this one runs another loop — the
        turn's values (until its loop runs ``_end``) would be found here.
        No server moves a stopped loop between threads."""
        return self.thread == threading.get_ident() and self.loop.is_running()


class TurnMemo(Generic[K, V]):
    """Values by key for the rest of the running loop's turn. Safe to share
    between loops on several threads: each turn is its own object, replaced
    whole, and a value is found only on the thread it was read on, while the
    loop it was read on runs (a forked child starts afresh)."""

    def __init__(self) -> None:
        self._turn: _Turn[K, V] | None = None

    def value(self, key: K, read: Callable[[], V]) -> V:
        """The value kept for ``key`` this turn, else ``read()``'s, kept."""
        found = self._found(key)
        if found is not None:
            return found[0]
        writes = _writes  # before the read: a write during it is noticed
        value = read()
        self._keep(key, value, writes)
        return value

    def get(self, key: K) -> V | None:
        """The value kept for ``key`` this turn, if any (None too when the
        value kept is None)."""
        found = self._found(key)
        return None if found is None else found[0]

    def _found(self, key: K) -> tuple[V, object] | None:
        turn = self._turn
        if (
            turn is None
            or turn.writes != _writes
            or not nowait.asked()
            or not turn.running_here()
        ):
            return None
        found = turn.values.get(key)
        if found is None or found[1] is asyncio.current_task(turn.loop):
            return None
        return found

    def _keep(self, key: K, value: V, writes: int) -> None:
        if writes != _writes or not nowait.asked():
            return
        turn = self._turn
        if turn is None or turn.writes != writes or not turn.running_here():
            loop = _running_loop()
            if loop is None or loop.get_task_factory() is not None:
                return
            turn = _Turn(loop, writes)
            self._turn = turn
            loop.call_soon(self._end, turn)
        turn.values[key] = (value, asyncio.current_task(turn.loop))

    def _end(self, turn: _Turn[K, V]) -> None:
        # Only its own turn: another loop's may have replaced it meanwhile.
        if self._turn is turn:
            self._turn = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
