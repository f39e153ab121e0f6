"""Store wrappers that keep the wrapped store's capabilities.

A wrapper (metrics, tracing, a test's counting store) subclasses
``StoreWrapper`` and overrides the calls it wraps; ``wrap`` builds it with
exactly the optional capabilities of the store inside — a wrapper around the
file store still answers ``404 Jobs directory not found``, one around the
memory store still runs on the event loop. ``RecordTexts`` and
``AsyncReads`` alone are not passed on: ``job/status`` would read past
a wrapper's own ``get``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .protocol import (
    Checkable,
    Enumerable,
    Expiring,
    ForkSafe,
    Indexed,
    Inline,
    Notifying,
    Presence,
    ProcessLocal,
    Store,
    TriesInline,
    Versioned,
)
from .rows import Mark, Query, Row, Stale, Tombstone, Window
from .types import Record

W = TypeVar("W", bound="StoreWrapper")


class StoreWrapper:
    """Forwards every call of the protocol to ``inner``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def get(self, job_id: str) -> Record | None:
        return self.inner.get(job_id)

    def read(self, job_id: str) -> Row | None:
        return self.inner.read(job_id)

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        return self.inner.read_many(job_ids)

    def changed_since(self, cutoff: float) -> Iterable[tuple[str, Any]]:
        return self.inner.changed_since(cutoff)

    def window(self, cutoff: float) -> Window:
        return self.inner.window(cutoff)

    def page(self, query: Query) -> list[Row]:
        return self.inner.page(query)

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        return self.inner.counts(statuses, cutoff)

    def mark(self) -> Mark:
        return self.inner.mark()

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        self.inner.put(record, at=at)

    def swap(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> bool:
        return self.inner.swap(record, expected=expected, at=at)

    def close(self) -> None:
        self.inner.close()


class _ForwardsPresence(StoreWrapper):
    def exists(self) -> bool:
        assert isinstance(self.inner, Presence)
        return self.inner.exists()


class _ForwardsJobs(StoreWrapper):
    def jobs(self) -> Iterable[tuple[str, float]]:
        assert isinstance(self.inner, Enumerable)
        return self.inner.jobs()


class _ForwardsNotifications(StoreWrapper):
    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        assert isinstance(self.inner, Notifying)
        return self.inner.subscribe(callback)


class _ForwardsIndexSize(StoreWrapper):
    def indexed(self) -> int:
        assert isinstance(self.inner, Indexed)
        return self.inner.indexed()


class _ForwardsCheck(StoreWrapper):
    def check(self) -> None:
        assert isinstance(self.inner, Checkable)
        self.inner.check()


class _ForwardsVersions(StoreWrapper):
    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        assert isinstance(self.inner, Versioned)
        return self.inner.swapped(record, expected=expected, at=at)


class _ForwardsExpiry(StoreWrapper):
    def stale(self, query: Stale) -> list[Row]:
        assert isinstance(self.inner, Expiring)
        return self.inner.stale(query)

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        assert isinstance(self.inner, Expiring)
        return self.inner.expire(rows, at=at)

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        assert isinstance(self.inner, Expiring)
        return self.inner.tombstones(job_ids)

    def buried(self, query: Query) -> list[Tombstone]:
        assert isinstance(self.inner, Expiring)
        return self.inner.buried(query)

    def forget(self, *, before: float, limit: int) -> int:
        assert isinstance(self.inner, Expiring)
        return self.inner.forget(before=before, limit=limit)


class _ForwardsForkSafety(StoreWrapper):
    @property
    def survives_fork(self) -> bool:
        assert isinstance(self.inner, ForkSafe)
        return self.inner.survives_fork


#: Each optional capability, and the base that passes it on (the markers
#: ``Inline``, ``TriesInline`` and ``ProcessLocal`` have no calls: they pass
#: on as themselves).
_FORWARDS: tuple[tuple[type, type], ...] = (
    (Presence, _ForwardsPresence),
    (Enumerable, _ForwardsJobs),
    (Notifying, _ForwardsNotifications),
    (Indexed, _ForwardsIndexSize),
    (Checkable, _ForwardsCheck),
    (ForkSafe, _ForwardsForkSafety),
    (Versioned, _ForwardsVersions),
    (Expiring, _ForwardsExpiry),
    (Inline, Inline),
    (TriesInline, TriesInline),
    (ProcessLocal, ProcessLocal),
)


def wrap(inner: Store, wrapper: type[W], *args: Any, **kwargs: Any) -> W:
    """``wrapper(inner, *args, **kwargs)``, declaring ``inner``'s capabilities."""
    bases = [
        wrapper,
        *(base for capability, base in _FORWARDS if isinstance(inner, capability)),
    ]
    kind = wrapper if len(bases) == 1 else type(wrapper.__name__, tuple(bases), {})
    made = kind(inner, *args, **kwargs)
    assert isinstance(made, wrapper)
    return made
