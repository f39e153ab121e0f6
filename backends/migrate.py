"""Copy every job from one store to another, keeping "last written" times."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from jobstatus_core import (
    ConfigError,
    Enumerable,
    Expiring,
    InvalidRecord,
    JobStatusError,
    Query,
    Store,
    Tombstone,
)
from jobstatus_core.errors import one_line_reason

# File mtimes round-trip through floats: times this close are the same time.
SAME_TIME_SECONDS = 1e-3

Progress = Callable[[int, int], None]


class DestinationFailed(JobStatusError):
    """Writing to the destination failed: the copy stops, as every later job
    would fail the same way. What was copied stays; running again resumes."""


@dataclass
class MigrationReport:
    copied: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Tombstones recreated in the destination (both stores expire jobs).
    tombstones: int = 0
    #: Tombstones the destination could not take (it expires no jobs).
    tombstones_left: int = 0

    def summary(self) -> str:
        line = (
            f"copied {self.copied}, skipped {self.skipped}, failed {len(self.failed)}"
        )
        if self.tombstones:
            line += f", tombstones {self.tombstones}"
        if self.tombstones_left:
            line += (
                f", {self.tombstones_left} tombstones not carried (the destination"
                " expires no jobs: a file store does with ?expire=delete)"
            )
        return line


def copy_jobs(
    src: Store, dst: Store, progress: Progress | None = None
) -> MigrationReport:
    """Copy every job of ``src`` into ``dst``.

    Idempotent: a job that ``dst`` already holds, identical and with the same
    "last written" time, is skipped. A job that cannot be read, or that the
    destination refuses as a record, is reported in ``failed`` with a one-line
    reason, never silently dropped. A destination that fails otherwise (disk
    full, unreachable) raises ``DestinationFailed``.
    """
    if not isinstance(src, Enumerable):
        raise ConfigError("the source store cannot list its jobs")
    listing = list(src.jobs())
    present = dict(dst.jobs()) if isinstance(dst, Enumerable) else {}
    report = MigrationReport()
    for done, (job_id, at) in enumerate(listing, 1):
        if progress is not None:
            progress(done, len(listing))
        try:
            record = src.get(job_id)
            if record is None:  # removed since it was listed
                report.skipped += 1
                continue
            if record.get("job_id") != job_id:
                raise ValueError(f"the record names job {record.get('job_id')!r}")
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ValueError) else one_line_reason(exc)
            report.failed.append((job_id, reason))
            continue
        try:
            there = present.get(job_id)
            if (
                there is not None
                and abs(there - at) < SAME_TIME_SECONDS
                and dst.get(job_id) == record
            ):
                report.skipped += 1
                continue
            dst.put(record, at=at)
        except InvalidRecord as exc:
            report.failed.append((job_id, str(exc)))
            continue
        except Exception as exc:
            raise DestinationFailed(
                f"the destination failed writing {job_id}: {one_line_reason(exc)}"
                f" ({report.copied} copied before it; run again to resume)"
            ) from exc
        report.copied += 1
    if isinstance(src, Expiring) and isinstance(dst, Expiring):
        report.tombstones = copy_tombstones(src, dst)
    elif isinstance(src, Expiring):
        report.tombstones_left = _count_tombstones(src)
    return report


def _count_tombstones(src: Expiring) -> int:
    return sum(len(page) for page in _buried_pages(src))


def _buried_pages(src: Expiring) -> Iterator[list[Tombstone]]:
    """``src``'s tombstones, a page of ``TOMBSTONE_BATCH`` at a time."""
    after = 0
    while page := src.buried(Query(after=after, limit=TOMBSTONE_BATCH)):
        yield page
        after = page[-1].position


#: Tombstones read and recreated per store call.
TOMBSTONE_BATCH = 500


def copy_tombstones(src: Expiring, dst: Expiring) -> int:
    """Recreate ``src``'s tombstones in ``dst``: each becomes a minimal
    record (its id and last status), expired at the tombstone's time. A job
    alive in ``dst`` or already buried there is left as it is."""
    assert isinstance(dst, Store)
    copied = 0
    for page in _buried_pages(src):
        ids = [tomb.job_id for tomb in page]
        alive = dst.read_many(ids)
        buried = dst.tombstones(ids)
        for tomb in page:
            if tomb.job_id in alive or tomb.job_id in buried:
                continue
            record = tomb.record()
            del record["expired_at"]
            # Written at the earliest time, so no purge can pick it first; then
            # expired at once, by its version, as a purge would.
            dst.put(record, at=0.0)
            row = dst.read(tomb.job_id)
            if row is not None:
                copied += len(dst.expire([row], at=tomb.expired_at))
    return copied
