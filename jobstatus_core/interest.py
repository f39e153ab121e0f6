"""What a wait or an event stream is waiting for: the changes that may
answer it. The adapters' wake-ups compare it with the rows that changed, so a
change to one job wakes only those who follow that job."""

from __future__ import annotations

from dataclasses import dataclass


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
