"""A context variable set for the length of a ``with`` block."""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType
from typing import Generic, TypeVar

V = TypeVar("V")


class Scoped(Generic[V]):
    """``var`` is ``value`` inside the block, and as it was before after it.

    A class, not contextlib's decorator: the core imports no more than it
    needs (tests/test_core.py)."""

    def __init__(self, var: ContextVar[V], value: V) -> None:
        self._var = var
        self._value = value

    def __enter__(self) -> None:
        self._token: Token[V] = self._var.set(self._value)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._var.reset(self._token)
