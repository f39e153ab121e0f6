"""The jobs directory as the file store knows it: rows in change order.

One ``JobTable`` per view of a jobs directory (the watchdog index, or the
scanning fallback). It holds no records, only each job's row: its status
text, mtime, version and position, in a ``TimeIndex`` (the Toolkit window)
and a ``ChangeLog`` (pages and kept counts).

Positions: a change the table observes takes ``max(head + 1, the file's
ctime in ns)``, and a full scan observes files in ctime order. Positions
only grow within a process, and a process started later places every change
made after an earlier one's cursor past that cursor, because those changes
have later ctimes (docs/stores.md: the caveats). Not thread-safe on its own:
owners guard it with their lock.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable

from jobstatus_core import Row, jsontext
from jobstatus_core.rows import Query, Stale, Window

from . import jobfiles
from .changelog import ChangeLog
from .fssnapshot import Entry, Snapshot
from .timeindex import TimeIndex

# inode, size, mtime_ns, ctime_ns (jobfiles.Fingerprint)
_FINGERPRINT = struct.Struct("<Qqqq")


def _packed(info: os.stat_result) -> bytes:
    return _FINGERPRINT.pack(*jobfiles.fingerprint_of(info))


class _Batch:
    """Rows and times taken in together (into an empty table)."""

    __slots__ = ("rows", "times")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.times: list[tuple[str, float, str | None]] = []


class JobTable:
    def __init__(self, jobs_dir: str, max_file_size: int) -> None:
        self.jobs_dir = jobs_dir
        self.reads = jobfiles.ListingReads(jobs_dir, max_file_size)
        self._times = TimeIndex()
        self._log = ChangeLog()
        # Each job file's lstat fingerprint when last read: a scan rereads
        # only the files whose fingerprint moved.
        # Packed (``_FINGERPRINT``): 65 bytes a job, where a tuple of four
        # ints took over 200.
        self._seen: dict[str, bytes] = {}
        self._statuses: dict[str, str] = {}
        #: Files the last rescan took from its snapshot, unread.
        self.taken_from_snapshot = 0

    def __len__(self) -> int:
        return len(self._log)

    @property
    def head(self) -> int:
        return self._log.head

    def reread(self, job_id: str, seen: os.stat_result | None = None) -> None:
        """Read the job's file again (``seen``: its lstat from a listing)."""
        # A file that is not a job record now (half-written, broken, too
        # large) is left out, as job/status answers 500 for it.
        found = self.reads.read(job_id, seen)
        if found is None:
            self.discard(job_id)
            return
        self.observe(job_id, found)

    def observe(self, job_id: str, found: jobfiles.JobFile) -> int:
        """Take in the job file as read; returns the job's position."""
        return self._place(self._entry_of(job_id, found), None)

    def _entry_of(self, job_id: str, found: jobfiles.JobFile) -> Entry:
        status, has_status = jobfiles.status_of(found.record)
        text = jsontext.encode(status) if has_status else None
        return Entry(job_id, found.fingerprint, found.mtime, found.version, text)

    def _place(self, entry: Entry, batch: _Batch | None) -> int:
        """Take in a job file's entry (read now, or from a snapshot); with
        ``batch``, its row and time are taken in by ``_take_batch``."""
        job_id = entry.job_id
        self._seen[job_id] = _FINGERPRINT.pack(*entry.fingerprint)
        current = self._log.get(job_id)
        if current is not None and current.version == entry.version:
            return current.position
        position = self._log.next_position(entry.fingerprint.ctime_ns)
        # One string per distinct status, not one per job.
        text = (
            None
            if entry.status is None
            else self._statuses.setdefault(entry.status, entry.status)
        )
        row = Row(job_id, text, entry.mtime, entry.version, position)
        if batch is None:
            self._times.set_text(job_id, entry.mtime, text)
            self._log.set(row)
        else:
            batch.times.append((job_id, entry.mtime, text))
            batch.rows.append(row)
        return position

    def _take_batch(self, batch: _Batch) -> None:
        self._times.set_many(batch.times)
        self._log.set_many(batch.rows)

    def entries(self) -> list[Entry]:
        """What a snapshot holds: each indexed job as it was read."""
        return [
            Entry(
                row.job_id,
                jobfiles.Fingerprint._make(_FINGERPRINT.unpack(self._seen[row.job_id])),
                row.updated_at,
                row.version,
                row.status,
            )
            for row in self._log.rows()
            if row.job_id in self._seen
        ]

    def bury(self, job_ids: Iterable[str], position: int) -> None:
        """Jobs expired through the store: gone, the head at ``position``
        (their tombstones' last), so the next change comes after them."""
        for job_id in job_ids:
            self._seen.pop(job_id, None)
            if self._log.discard(job_id) is not None:
                self._times.discard(job_id)
        self.reach(position)

    def reach(self, position: int) -> None:
        """Move the head to at least ``position`` (another process's tombstone)."""
        if position > self._log.head:
            self._log.next_position(position)

    def discard(self, job_id: str) -> None:
        self._seen.pop(job_id, None)
        if self._log.discard(job_id) is not None:
            self._times.discard(job_id)
            self._log.next_position()  # a deletion moves the mark too

    def clear(self) -> None:
        """Forget every job (the directory is gone or leads elsewhere)."""
        if len(self._log):
            self._log.next_position()
        self._log.clear()
        self._times.clear()
        self._seen.clear()

    def rescan(self, *, full: bool, known: Snapshot | None = None) -> bool:
        """Compare the directory with the table; reread what differs.

        ``full`` rereads every file, but those ``known`` (a snapshot) holds
        as they are now. False when there is no jobs directory.
        """
        try:
            on_disk = dict(jobfiles.scan(self.jobs_dir))
        except (FileNotFoundError, NotADirectoryError):
            self.clear()
            return False
        changed = [
            (info.st_ctime_ns, job_id, info)
            for job_id, info in on_disk.items()
            if full or self._seen.get(job_id) != _packed(info)
        ]
        # In ctime order: the order the changes were made in (job ids are
        # distinct, so the stat results are never compared).
        changed.sort()
        # Into an empty table, times are sorted once at the end: inserting a
        # million in ctime order, not time order, moves the list each time.
        batch = _Batch() if not len(self._times) else None
        self.taken_from_snapshot = 0
        for _, job_id, info in changed:
            entry = None if known is None else known.match(job_id, info)
            if entry is not None:
                self.taken_from_snapshot += 1
            else:
                found = self.reads.read(job_id, info)
                if found is None:
                    self.discard(job_id)
                    continue
                entry = self._entry_of(job_id, found)
            self._place(entry, batch)
        if batch is not None:
            self._take_batch(batch)
        for job_id in [j for j in self._times.job_ids() if j not in on_disk]:
            self.discard(job_id)
        for job_id in [j for j in self._seen if j not in on_disk]:
            del self._seen[job_id]
        self.reads.keep_only(on_disk)
        return True

    # -- queries --------------------------------------------------------------

    def window(self, cutoff: float) -> Window:
        return self._times.window(cutoff)

    def page(self, query: Query) -> list[Row]:
        """Rows without records."""
        return self._log.page(query)

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        if cutoff is None:
            return self._log.counts(statuses, None)
        return self._log.counts_of(self._times.ids_since(cutoff), statuses, cutoff)

    def job_ids(self) -> Iterable[str]:
        return self._times.job_ids()

    def stale(self, query: Stale) -> list[Row]:
        """Live jobs of ``query``, oldest first, from the time index (no reads)."""
        found: list[Row] = []
        for job_id in self._times.before(query.before):
            row = self._log.get(job_id)
            if row is None or row.status is None:
                continue
            if query.statuses is None:
                if row.status in query.other_than:
                    continue
            elif row.status not in query.statuses:
                continue
            found.append(row)
            if len(found) >= query.limit:
                break
        return found


class ScannedJobs:
    """A ``JobTable`` brought up to date by a directory scan on every query:
    the file store without an index (``?index=off``, or the index failed).

    Each query lists and ``lstat``s every job file, as the Toolkit does, and
    reads only the files that changed since the last query. Thread-safe.
    """

    def __init__(self, jobs_dir: str, max_file_size: int) -> None:
        self._lock = threading.Lock()
        self._table = JobTable(jobs_dir, max_file_size)

    def window(self, cutoff: float) -> Window:
        with self._lock:
            self._table.rescan(full=False)
            return self._table.window(cutoff)

    def page(self, query: Query) -> list[Row]:
        with self._lock:
            self._table.rescan(full=False)
            return self._table.page(query)

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        with self._lock:
            self._table.rescan(full=False)
            return self._table.counts(statuses, cutoff)

    def head(self) -> int:
        with self._lock:
            self._table.rescan(full=False)
            return self._table.head

    def observe(self, job_id: str, found: jobfiles.JobFile) -> int:
        with self._lock:
            return self._table.observe(job_id, found)

    def head_now(self) -> int:
        with self._lock:
            return self._table.head

    def stale(self, query: Stale) -> list[Row]:
        # A scan per batch: purging is a background job (docs/stores.md).
        with self._lock:
            self._table.rescan(full=False)
            return self._table.stale(query)

    def bury(self, job_ids: Iterable[str], position: int) -> None:
        with self._lock:
            self._table.bury(job_ids, position)

    def reach(self, position: int) -> None:
        with self._lock:
            self._table.reach(position)
