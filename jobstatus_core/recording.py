"""The rules of the recording API (SPEC §13), as one pure function.

``apply(current, change, now)`` is the record a change makes of the current
one, or None when the change is out of order and must be ignored. Stores
make it atomic with ``Store.swap``: read, apply, swap if nothing changed in
between, else read again.

Order: a higher ``attempt`` starts the job over; a lower one is ignored.
Within one attempt a job moves queued → running → a terminal status, never
back, and the first terminal status stays (a late duplicate never flips
``done`` to ``cancelled``). ``meta`` patches apply at any stage.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidRecord
from .types import Record

DEFAULT_TERMINAL = frozenset({"done", "failed", "cancelled"})

Kind = Literal["queued", "running", "progress", "done", "failed", "cancelled", "meta"]

#: Fields the rules own: a caller's ``**fields`` may not set them.
RESERVED = frozenset(
    {
        "job_id",
        "job_status",
        "attempt",
        "progress",
        "error",
        "response",
        "created_at",
        "started_at",
        "finished_at",
        "meta",
    }
)

#: What a new attempt drops of the one before: how that attempt went. Every
#: other field (the task, ``created_at``, ``meta``, a host's own fields) stays.
PER_ATTEMPT = ("response", "error", "progress", "started_at", "finished_at")

_STAGE = {"queued": 0, "running": 1, "progress": 1}


@dataclass(frozen=True, slots=True)
class Change:
    job_id: str
    kind: Kind
    #: Top-level fields to set (``task``, ``queue_id``, …), or for ``meta``
    #: the patch of the ``meta`` object.
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: None: the job's current attempt (1 for a new job).
    attempt: int | None = None
    response: Any = None
    error: Mapping[str, Any] | None = None
    progress: Mapping[str, Any] | None = None


def apply(
    current: Mapping[str, Any] | None,
    change: Change,
    now: float,
    terminal: Collection[str] = DEFAULT_TERMINAL,
) -> Record | None:
    """The new record, or None when ``change`` is out of order."""
    if change.attempt is not None and (
        isinstance(change.attempt, bool)
        or not isinstance(change.attempt, int)
        or change.attempt < 1
    ):
        raise InvalidRecord("attempt must be a whole number >= 1")
    if current is None:
        if change.kind == "meta":
            return None  # nothing to annotate yet: the job is unknown
        record: Record = {"job_id": change.job_id, "job_status": None, "response": None}
        record["attempt"] = change.attempt or 1
        record["created_at"] = now
        return _advance(record, change, now)
    record = dict(current)
    attempt = _attempt_of(record)
    wanted = attempt if change.attempt is None else change.attempt
    if wanted < attempt:
        return None
    if wanted > attempt:
        if change.kind == "meta":
            return None
        fresh = {k: v for k, v in record.items() if k not in PER_ATTEMPT}
        fresh["response"] = None
        fresh["attempt"] = wanted
        fresh.setdefault("created_at", now)
        return _advance(fresh, change, now)
    if change.kind == "meta":
        meta = record.get("meta")
        record["meta"] = {**(meta if isinstance(meta, dict) else {}), **change.fields}
        return record
    status = record.get("job_status")
    if isinstance(status, str) and status in terminal:
        return None  # the first terminal status of an attempt stays
    stage = _STAGE.get(status, 0) if isinstance(status, str) else 0
    if change.kind in _STAGE and _STAGE[change.kind] < stage:
        return None
    return _advance(record, change, now)


def _advance(record: Record, change: Change, now: float) -> Record:
    record.update(change.fields)
    kind = change.kind
    if kind == "queued":
        record["job_status"] = "queued"
    elif kind in ("running", "progress"):
        if record.get("job_status") != "running":
            record["job_status"] = "running"
            record["started_at"] = now
        if change.progress is not None:
            record["progress"] = dict(change.progress)
    else:
        record["job_status"] = kind
        record["finished_at"] = now
        if kind == "done":
            record["response"] = change.response
        elif kind == "failed":
            record["error"] = dict(change.error or {})
    return record


def _attempt_of(record: Mapping[str, Any]) -> int:
    attempt = record.get("attempt")
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
        return attempt
    return 1


def check_fields(fields: Mapping[str, Any]) -> None:
    """Refuse caller fields that the rules own."""
    taken = sorted(set(fields) & RESERVED)
    if taken:
        raise InvalidRecord(f"{taken[0]!r} is set by the recorder, not as a field")
