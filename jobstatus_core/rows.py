"""What stores hand the core: rows of jobs, listing windows, page queries.

A row carries everything an answer needs besides the record itself: the
status as JSON text (so listings join text instead of encoding values), when
the job was last written, its version (the ETag) and its place in the store's
change order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .types import Record


@dataclass(frozen=True, slots=True)
class Row:
    """One job as a store holds it."""

    job_id: str
    #: ``job_status`` as JSON text (``jsontext.encode``); None when the record
    #: has no ``job_status`` field.
    status: str | None
    #: "Last written", epoch seconds.
    updated_at: float
    #: Opaque; changes with every change of this job.
    version: str
    #: The job's last change in the store-wide change order.
    position: int
    #: The whole record, when the query asked for it.
    record: Record | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a store's change order stands.

    ``epoch`` names one life of the store's data: it never repeats after the
    data is lost or replaced (a flushed Redis, a restored SQLite file), so a
    mark, or a cursor, from before such a reset is never mistaken for one
    after it. ``head`` is the position of the latest change.
    """

    epoch: str
    head: int
    #: Which server answered, where a store can tell (Redis' run id,
    #: PostgreSQL's start time): a failover to a replica that lags behind, or
    #: a restart from a snapshot older than the last writes, can repeat a
    #: head under the same epoch, never this.
    server: str = ""

    @property
    def life(self) -> str:
        """What cursors are bound to: the epoch, and the server where the
        store names one. Positions handed out before a restart or failover
        may be handed out again after it (Redis saves its data now and
        then), so a cursor from before is answered ``410 Cursor expired``
        and its client starts again from a snapshot: a change repeated,
        never one skipped (SPEC §8)."""
        return f"{self.epoch}@{self.server}" if self.server else self.epoch

    def continues(self, life: str) -> bool:
        """Whether a cursor bound to ``life`` resumes in this mark's: the same
        epoch, and the same server where both name one. Instances whose
        Redis users differ in being allowed ``INFO`` share a store, and
        each one's cursors must resume on the other (where one names no
        server, the epoch is all either can tell)."""
        if life == self.life:
            return True
        epoch, _, server = life.partition("@")
        return epoch == self.epoch and not (server and self.server)


@dataclass(frozen=True, slots=True)
class Window:
    """The Toolkit listing of ``jobs/status``, as a store returns it.

    ``members`` are ``"job_id":status`` texts (``jsontext.member``), jobs
    without a status left out, ordered by (last written, job_id); ``oldest``
    is the earliest "last written" among them (None when there are none),
    which tells how long the listing stays exact as the window moves.
    """

    members: Sequence[str]
    oldest: float | None


@dataclass(frozen=True, slots=True)
class Query:
    """A page of jobs in change order: ``GET /v1/jobs``."""

    #: Status JSON texts to match exactly; None matches every status.
    statuses: frozenset[str] | None = None
    #: Only jobs last written at or after this epoch time.
    cutoff: float | None = None
    #: Only jobs whose last change comes after this position.
    after: int = 0
    limit: int = 100
    #: Fill ``Row.record``.
    records: bool = False


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What an expired job leaves behind (retention): its id, its last status
    and when it expired. It takes a place in the change order, like a write."""

    job_id: str
    #: The job's last ``job_status`` as JSON text, as in ``Row.status``.
    status: str
    expired_at: float
    #: The expiry's place in the store-wide change order.
    position: int

    def record(self) -> Record:
        """The tombstone as answers show it."""
        return {
            "job_id": self.job_id,
            "job_status": json.loads(self.status),
            "expired_at": self.expired_at,
        }


@dataclass(frozen=True, slots=True)
class Stale:
    """Live jobs that retention may expire: ``Expiring.stale``."""

    #: Last written strictly before this epoch time.
    before: float
    #: Status JSON texts to match; None matches every status but
    #: ``other_than`` (the policy's ``*`` rule). Jobs without a status never.
    statuses: frozenset[str] | None = None
    other_than: frozenset[str] = frozenset()
    limit: int = 1000
