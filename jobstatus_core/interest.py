"""What a wait or an event stream is waiting for: the changes that may
answer it. The adapters' wake-ups compare it with the rows that changed, so a
change to one job wakes only those who follow that job; a wake-up hands over
what the look found (``Found``), so that those it wakes need not read the
store again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .rows import Row, Tombstone


@dataclass(frozen=True, slots=True)
class Interest:
    #: These jobs; None: any job.
    job_ids: frozenset[str] | None = None
    #: Status JSON texts (as in ``Row.status``) a change must have; None: any.
    statuses: frozenset[str] | None = None

    def matches(self, job_id: str, status: str | None) -> bool:
        """Whether a change of ``job_id`` to ``status`` may answer it."""
        return (self.job_ids is None or job_id in self.job_ids) and (
            self.statuses is None or status in self.statuses
        )


#: Any change at all.
ANY = Interest()


@dataclass(frozen=True, slots=True)
class Found:
    """What one look at the store read: every change after the position
    where the last look stopped, up to the mark it read first, as the latest
    row of its job (or its tombstone), without records. Shared by everyone
    the look wakes: read-only but for ``shared``.

    Whoever it wakes read the store (or used the look before) at an earlier
    generation, and no look since matched it: with these rows it knows every
    change it waits for up to this look, as if it had read the store now."""

    #: The hub's generation of this look: wait again from it.
    generation: int
    rows: Mapping[str, Row]
    tombs: Mapping[str, Tombstone]
    #: The one thing those it wakes write: what a stream made of the rows
    #: (its events, encoded), kept for the next stream with the same filter
    #: and resume point — 1,000 followers of a job encode its event once.
    shared: dict[object, object] = field(
        default_factory=dict, compare=False, repr=False
    )
