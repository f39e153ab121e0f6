"""Trying a store's read on the event loop, and refusing when it would wait.

The Starlette adapter runs a ``TriesInline`` store's read inside
``attempt()``; the store, seeing ``asked()``, reads without waiting and
raises ``WouldBlock`` where it would have waited; the adapter then runs the
same call on a worker thread. A context variable, not an argument: the
service's handlers between the adapter and the store stay as they are, and
the worker thread (another context) reads the ordinary way.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType

_asked: ContextVar[bool] = ContextVar("jobstatus_nowait", default=False)


def attempt() -> _Attempt:
    """Store calls made inside may raise ``WouldBlock`` instead of waiting."""
    return _Attempt()


class _Attempt:
    # A class, not contextlib's decorator: the core imports no more than it
    # needs (tests/test_core.py).
    def __enter__(self) -> None:
        self._token: Token[bool] = _asked.set(True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _asked.reset(self._token)


def asked() -> bool:
    """Whether the running call must not wait (it is on the event loop)."""
    return _asked.get()
