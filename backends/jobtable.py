"""The jobs directory as the file store knows it: rows in change order.

One ``JobTable`` per view of a jobs directory (the watchdog index, or the
scanning fallback). It holds no records, only each job's row: its status
text, mtime, version and position, as columns (``JobColumns``: the Toolkit
window, pages and kept counts).

Positions: a change the table observes takes ``max(head + 1, the file's
ctime in ns)``, and a full scan observes files in ctime order. Positions
only grow within a process, and a process started later places every change
made after an earlier one's cursor past that cursor, because those changes
have later ctimes (docs/stores.md: the caveats). Not thread-safe on its own:
owners guard it with their lock.
"""

from __future__ import annotations

import operator
import os
import stat
import struct
import threading
from array import array
from collections.abc import Iterable
from itertools import chain, compress, islice
from typing import NamedTuple

from jobstatus_core import Row, jsontext
from jobstatus_core.rows import Query, Stale, Window

from . import jobfiles
from .fssnapshot import Snapshot
from .jobcolumns import (
    DIGEST_SIZE,
    FINGERPRINT,
    FP_SIZE,
    NO_STATUS,
    Columns,
    JobColumns,
    empty_columns,
    gather,
    version_parts,
)


def _packed(info: os.stat_result) -> bytes:
    try:
        return FINGERPRINT.pack(
            info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns
        )
    except struct.error:  # a time past 2262: kept within 64 bits
        return FINGERPRINT.pack(*jobfiles.fingerprint_of(info))


#: Files read between two looks whether a build should stop.
STOP_EVERY = 1024


class BuildStopped(Exception):
    """A full build was asked to stop (the store closes as it starts)."""


class JobTable:
    def __init__(self, jobs_dir: str, max_file_size: int) -> None:
        self.jobs_dir = jobs_dir
        self.reads = jobfiles.ListingReads(jobs_dir, max_file_size)
        self._rows = JobColumns()
        #: Files the last full rescan took from its snapshot, unread.
        self.taken_from_snapshot = 0
        #: Moves whenever every job is forgotten (``clear``): positions
        #: given out before then may not be the jobs' positions any more,
        #: even for files that did not change.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def head(self) -> int:
        return self._rows.head

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
        rows = self._rows
        if rows.version_of(job_id) == found.version:
            rows.refingerprint(job_id, found.fingerprint)
            position = rows.position_of(job_id)
            assert position is not None
            return position
        position = rows.next_position(found.fingerprint.ctime_ns)
        rows.set(
            job_id,
            found.fingerprint,
            found.mtime,
            found.version,
            _status_text(found),
            position,
        )
        return position

    def columns(self) -> Columns:
        """What a snapshot holds: each indexed job as it was read."""
        return self._rows.columns()

    def bury(self, job_ids: Iterable[str], position: int) -> None:
        """Jobs expired through the store: gone, the head at ``position``
        (their tombstones' last), so the next change comes after them."""
        self._rows.discard_many(job_ids)
        self.reach(position)

    def reach(self, position: int) -> None:
        """Move the head to at least ``position`` (another process's tombstone)."""
        if position > self._rows.head:
            self._rows.next_position(position)

    def discard(self, job_id: str) -> None:
        if self._rows.discard(job_id):
            self._rows.next_position()  # a deletion moves the mark too

    def clear(self) -> None:
        """Forget every job (the directory is gone or leads elsewhere)."""
        if len(self._rows):
            self._rows.next_position()
        self._rows.clear()
        self.generation += 1

    def rescan(
        self,
        *,
        full: bool,
        known: Snapshot | None = None,
        stop: threading.Event | None = None,
    ) -> bool:
        """Compare the directory with the table; reread what differs.

        ``full`` builds the table anew: every file is read, but those
        ``known`` (a snapshot) holds as they are now; ``BuildStopped`` once
        ``stop`` is set. False when there is no jobs directory.
        """
        if full:
            return self._build(known, stop)
        try:
            listed = list(jobfiles.scan(self.jobs_dir))
        except (FileNotFoundError, NotADirectoryError):
            self.clear()
            return False
        fingerprint_of = self._rows.fingerprint_of
        changed = [
            (info.st_ctime_ns, job_id, info)
            for job_id, info in listed
            if fingerprint_of(job_id) != _packed(info)
        ]
        # In ctime order: the order the changes were made in (job ids are
        # distinct, so the stat results are never compared).
        changed.sort()
        for _, job_id, info in changed:
            self.reread(job_id, info)
        on_disk = {job_id for job_id, _ in listed}
        for job_id in [j for j in self._rows.job_ids() if j not in on_disk]:
            self.discard(job_id)
        self.reads.keep_only(on_disk)
        return True

    def _build(self, known: Snapshot | None, stop: threading.Event | None) -> bool:
        """The table anew from a listing, taking from ``known`` the files
        whose fingerprint is the one it recorded, and reading the others."""
        self.clear()
        snapshot = empty_columns() if known is None else known.columns
        trusted_before = 0 if known is None else known.trusted_before_ns
        row_of = dict(zip(snapshot.job_ids, range(len(snapshot.job_ids)), strict=True))
        matched = match_listing(self.jobs_dir, snapshot, row_of, trusted_before)
        if matched is None:
            return False
        taken, unmatched = matched
        # Every job file listed: made only when a failure is remembered.
        present = chain(
            compress(snapshot.job_ids, taken), (job_id for job_id, _ in unmatched)
        )
        self.taken_from_snapshot = len(snapshot.job_ids) - taken.count(0)
        if self.taken_from_snapshot < len(snapshot.job_ids):
            snapshot = gather(snapshot, [row for row, t in enumerate(taken) if t])
        # What a row keeps of each file, not the file: a full build reads
        # a million records.
        found: list[_Read] = []
        for n, (job_id, info) in enumerate(unmatched):
            if stop is not None and n % STOP_EVERY == 0 and stop.is_set():
                raise BuildStopped
            file = self.reads.read(job_id, info)
            if file is not None:
                found.append(
                    _Read(
                        job_id,
                        file.fingerprint,
                        file.mtime,
                        file.version,
                        _status_text(file),
                    )
                )
        joined = _joined(snapshot, found)
        columns, positions, head = _placed(joined, self._rows.head)
        # The snapshot's rows as they were, in their order: their numbers
        # by job id are the ones made for matching.
        same = known is not None and columns is known.columns
        self._rows.load(columns, positions, head, row_of if same else None)
        self.reads.keep_only(present)
        return True

    # -- queries --------------------------------------------------------------

    def window(self, cutoff: float) -> Window:
        return self._rows.window(cutoff)

    def page(self, query: Query) -> list[Row]:
        """Rows without records."""
        return self._rows.page(query)

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        return self._rows.counts(statuses, cutoff)

    def job_ids(self) -> Iterable[str]:
        return self._rows.job_ids()

    def stale(self, query: Stale) -> list[Row]:
        """Live jobs of ``query``, oldest first, from the time index (no reads)."""
        found: list[Row] = []
        for row in self._rows.before(query.before):
            if row.status is None:
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


def match_listing(
    jobs_dir: str,
    snapshot: Columns,
    row_of: dict[str, int],
    trusted_before: int,
) -> tuple[bytearray, list[tuple[str, os.stat_result]]] | None:
    """List ``jobs_dir`` and ``lstat`` each job file in it: which rows of
    ``snapshot`` (numbered by ``row_of``) are as their files are now
    (``taken``, a byte a row), and the job files that are not (the others,
    with their ``lstat``); None when there is no such directory.

    The one loop over every file (a million at a start), kept to a lookup,
    an ``lstat`` and a compare: a name the snapshot knows is a job file's
    without the pattern, and its file is a regular one when its
    fingerprint is the one recorded (only regular files are read). A row
    whose ctime is not before ``trusted_before`` is never taken.
    """
    fingerprints = snapshot.fingerprints
    taken = bytearray(len(snapshot.job_ids))
    unmatched: list[tuple[str, os.stat_result]] = []
    pack, size = FINGERPRINT.pack, FP_SIZE
    get = row_of.get
    suffix = jobfiles.SUFFIX
    cut = -len(suffix)
    job_id_of = jobfiles.job_id_of
    # Through a descriptor of jobs/ (the one directory serving opens):
    # each lstat is then of a name in it, not of a path walked from /.
    try:
        fd = os.open(jobs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                name = entry.name
                job_id = name[:cut]
                row = get(job_id)
                if row is None or not name.endswith(suffix):
                    row = None
                    other = job_id_of(name)
                    if other is None:
                        continue
                    job_id = other
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed since it was listed
                    continue
                if row is not None and (ctime := info.st_ctime_ns) < trusted_before:
                    try:
                        packed = pack(
                            info.st_ino, info.st_size, info.st_mtime_ns, ctime
                        )
                    except struct.error:  # a time past 2262
                        packed = _packed(info)
                    # Compared in place: no slice made a million times.
                    if fingerprints.startswith(packed, row * size):
                        taken[row] = 1
                        continue
                if stat.S_ISREG(info.st_mode):
                    unmatched.append((job_id, info))
    finally:
        os.close(fd)
    return taken, unmatched


def _status_text(found: jobfiles.JobFile) -> str | None:
    status, has_status = jobfiles.status_of(found.record)
    return jsontext.encode(status) if has_status else None


class _Read(NamedTuple):
    job_id: str
    fingerprint: jobfiles.Fingerprint
    mtime: float
    version: str
    status: str | None


def _joined(columns: Columns, found: list[_Read]) -> Columns:
    """``columns`` and the files ``found``, as columns."""
    if not found:
        return columns
    statuses = list(columns.statuses)
    code_of = {text: code for code, text in enumerate(statuses)}
    job_ids = [*columns.job_ids]
    codes = array("i", columns.codes)
    fingerprints = [columns.fingerprints]
    digests = [columns.digests]
    mtimes = array("d", columns.mtimes)
    odd = dict(columns.odd_versions)
    for job_id, fingerprint, mtime, version, text in found:
        if text is None:
            code = NO_STATUS
        else:
            code = code_of.setdefault(text, len(statuses))
            if code == len(statuses):
                statuses.append(text)
        digest = version_parts(fingerprint, version)
        if digest is None:
            odd[len(job_ids)] = version
            digest = bytes(DIGEST_SIZE)
        job_ids.append(job_id)
        codes.append(code)
        fingerprints.append(FINGERPRINT.pack(*fingerprint))
        digests.append(digest)
        mtimes.append(mtime)
    return Columns(
        job_ids, codes, statuses, b"".join(fingerprints), b"".join(digests), mtimes, odd
    )


def _placed(columns: Columns, head: int) -> tuple[Columns, array[int], int]:
    """``columns`` in change order, their positions, and the head after them.

    Every file is placed in ctime order (ties by job id), each at
    ``max(head + 1, its ctime)``: the order a full build gives, whichever
    files came from a snapshot."""
    every = array("q")
    every.frombytes(columns.fingerprints)
    # A list's items, not an array's: those are made anew on each access.
    ctimes = every[3::4].tolist()
    # A snapshot holds its rows in change order: when no file changed they
    # are in order already, and checking that costs less than sorting them.
    if not _in_change_order(ctimes, columns.job_ids):
        keys = list(zip(ctimes, columns.job_ids, strict=True))
        order = sorted(range(len(keys)), key=keys.__getitem__)
        del keys
        columns = gather(columns, order)
        ctimes = [ctimes[row] for row in order]
    positions = array("q")
    append = positions.append
    for ctime in ctimes:
        head = head + 1 if head >= ctime else ctime
        append(head)
    return columns, positions, head


def _in_change_order(ctimes: list[int], job_ids: list[str]) -> bool:
    """Whether the rows are by (ctime, job id) already (tuples compared
    by C-level iterators: a start has a million rows)."""
    keys = zip(ctimes, job_ids, strict=True)
    later = zip(islice(ctimes, 1, None), islice(job_ids, 1, None), strict=True)
    return all(map(operator.lt, keys, later))


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

    @property
    def generation(self) -> int:
        """``JobTable.generation``: read without the lock (an int)."""
        return self._table.generation

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
