"""The store protocol: what a backend implements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from .errors import InvalidRecord
from .types import Record
from .validation import JOB_ID_RULE, is_valid_job_id


@runtime_checkable
class Store(Protocol):
    """A place job records live. Sync, small, the same for every backend.

    "Last written" is the time a record was last put, or for stores shared with
    other writers, the time the store observed (a file's mtime).
    """

    def get(self, job_id: str) -> Record | None:
        """The stored record, verbatim, or None."""

    def changed_since(self, cutoff: float) -> Iterable[tuple[str, Any]]:
        """``(job_id, job_status)`` of records last written at or after ``cutoff``.

        Records without a ``job_status`` field are left out.
        """

    def exists(self) -> bool:
        """Whether the store is there at all (filesystem: the jobs directory)."""

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        """Write a whole record; "last written" becomes ``at`` or now.

        A reader never sees a half-written record.
        """

    def close(self) -> None:
        """Release connections and threads. Idempotent."""


@runtime_checkable
class Enumerable(Protocol):
    """A store that can list every job it holds; the built-in stores all can.

    Used to copy jobs between stores (``jobstatus migrate``), not to serve.
    """

    def jobs(self) -> Iterable[tuple[str, float]]:
        """``(job_id, last written)`` of every job, records without a status too."""


@runtime_checkable
class ListsAsJSON(Protocol):
    """A store that keeps its listing pre-encoded; the built-in stores all do.

    ``jobs/status`` then joins text instead of encoding a thousand statuses.
    """

    def changed_since_json(self, cutoff: float) -> str:
        """``jsontext.encode(dict(changed_since(cutoff)))``, byte for byte."""


@runtime_checkable
class Checkable(Protocol):
    """A store that can prove, at start, that it will serve: the built-in
    network and file stores can. ``jobstatus serve`` calls it before it says
    it is serving, so a wrong password or an unreadable directory stops the
    start instead of failing every request."""

    def check(self) -> None:
        """Raise ``ConfigError`` (a wrong setting) or ``StoreError``."""


@runtime_checkable
class ForkSafe(Protocol):
    """A store that keeps working in a child process after ``os.fork()``
    (memory, Redis). Others (file: observer threads; SQLite: a connection)
    must be opened after the fork; a service built before one refuses to
    use them in the child (see ``jobstatus_adapters.service``)."""

    survives_fork: bool


def checked_job_id(record: Mapping[str, Any]) -> str:
    """The job id of a record about to be put; raises ``InvalidRecord``."""
    if not isinstance(record, Mapping):
        raise InvalidRecord("a record must be a JSON object")
    job_id = record.get("job_id")
    if not is_valid_job_id(job_id):
        raise InvalidRecord(f"record job_id must be {JOB_ID_RULE}")
    if "job_status" not in record:
        raise InvalidRecord("record job_status is required")
    assert isinstance(job_id, str)
    return job_id
