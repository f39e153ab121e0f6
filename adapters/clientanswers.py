"""What the jobstatus client's calls answer: typed views of the envelopes'
``response`` (SPEC §9-§12), and the changes a watch yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from jobstatus_core.types import Record


class JobState(TypedDict):
    job_status: Any
    updated_at: float
    version: str


class _Listed(JobState):
    job_id: str


class ListedJob(_Listed, total=False):
    #: Only with ``include_records=True``.
    record: Record


class BatchResult(TypedDict):
    jobs: dict[str, Record]
    expired: dict[str, Record]
    unknown: list[str]


class TokenGrant(TypedDict):
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Waited:
    """One job's wait: its record (None: it does not exist) and whether the
    condition held before the time was up."""

    record: Record | None
    met: bool


@dataclass(frozen=True, slots=True)
class WaitedMany:
    """Many jobs' wait: those that met the condition, those still pending,
    and those that expired meanwhile (their tombstones: an expired job
    meets any condition, SPEC §14)."""

    jobs: dict[str, JobState]
    pending: list[str]
    met: bool
    expired: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the change feed: ``kind`` is ``job`` or ``expired``; or
    ``reset`` (``RESET``, no job): the store began another life (flushed,
    restored, restarted behind its writes), so the jobs seen before may be
    gone; the window's jobs follow, as at the start."""

    kind: str
    job_id: str
    job_status: Any
    #: The event's data as sent: the job's state, or its tombstone.
    data: dict[str, Any]
    #: Where the feed resumes after this change.
    cursor: str | None


#: The change a watch yields when it starts again from the window.
RESET = Change("reset", "", None, {}, None)
