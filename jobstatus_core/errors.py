"""Every error the library raises (HTTP answers are in ``problems``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class JobStatusError(Exception):
    """Base class: callers that want one thing to catch catch this."""


class ConfigError(JobStatusError):
    """A setting is wrong. The message names the setting and fits on one line."""


class InvalidRecord(JobStatusError, ValueError):
    """A record handed to ``Store.put`` is not a valid job record."""


class StoreError(JobStatusError):
    """The store failed. The message is a one-line reason safe to show a client."""


#: Why a store opened before ``os.fork()`` is not used in the child (a
#: SQLite connection, the file store's observer threads are the parent's).
OPENED_BEFORE_FORK = (
    "the store was opened before this process forked (gunicorn --preload?):"
    " open it in each worker"
)


class StoreUnavailable(StoreError):
    """A network store is unreachable or timed out; the request may be retried."""


def first_line(exc: BaseException) -> str:
    """What ``exc`` says, on one line: its first, at most 200 characters
    ("" when it says nothing). For errors whose text is the reason (a
    server's refusal); ``one_line_reason`` for what a client may see."""
    return _first_line_of(str(exc))


def one_line_reason(exc: BaseException) -> str:
    """A reason fit for a client: one line, no traceback, no file paths.

    ``StoreError`` messages are written by backends for clients. Anything else
    may carry paths (``OSError.filename``) or secrets, so only its kind is shown.
    """
    if isinstance(exc, StoreError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = type(exc).__name__
    return _first_line_of(text.strip()) or type(exc).__name__


def _first_line_of(text: str) -> str:
    return (text.splitlines() or [""])[0][:200]


class WouldBlock(JobStatusError):
    """A store asked not to wait (``nowait.attempt``) would have had to: a
    page not in the page cache, a lock held, a call over its time budget.
    Nothing was changed; the caller runs the same call again where waiting
    is fine (a worker thread).

    ``fetch``, when given, is what the store was waiting for as a coroutine
    (a Redis round trip on the loop's own connection): an event loop may await it
    and try the call again with its outcome under ``key``
    (``nowait.attempt(fetched)``), instead of moving to a thread.
    """

    def __init__(
        self,
        message: str,
        *,
        key: Hashable = None,
        fetch: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.fetch = fetch
