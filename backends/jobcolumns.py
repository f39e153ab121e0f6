"""The file index's rows, held as columns: a few dozen bytes a job.

A million job files are a million rows, and a row object, its version text,
its listing member text and a dict entry each cost as much as the job's few
numbers: so the rows are held column by column, one slot per row (its
position, mtime, fingerprint, version digest and a status code into a table
of distinct status texts), and the ``Row`` objects, version texts and
listing members are made when a request asks for them.

Slots are appended in change order: the positions column only grows, so a
page is a bisection of it. A job changed again takes a new slot and leaves
its old one dead (no job id), skipped, and compacted away now and then. The
time order (the Toolkit window) is an array of slots kept sorted by (mtime,
job_id), and each status's slots are an array of their own (pages that
filter by status). Not thread-safe on its own: owners guard it with their
lock.
"""

from __future__ import annotations

import heapq
import operator
import struct
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import compress, islice, repeat
from typing import NamedTuple

from jobstatus_core import Row
from jobstatus_core.rows import Query, Window

from .jobfiles import Fingerprint

#: inode, size, mtime_ns, ctime_ns (``jobfiles.Fingerprint``), per slot.
FINGERPRINT = struct.Struct("<Qqqq")
FP_SIZE = FINGERPRINT.size
#: The version's digest (``jobfiles.version_of``): 8 bytes per slot.
DIGEST_SIZE = 8
#: The status code of a record without ``job_status`` (left out of listings).
NO_STATUS = -1


class Columns(NamedTuple):
    """Rows as columns, index for index: what a snapshot holds, and what a
    table is built from."""

    job_ids: list[str]
    #: Into ``statuses``; ``NO_STATUS`` for none.
    codes: array[int]
    statuses: list[str]
    #: ``FINGERPRINT``-packed, one per row.
    fingerprints: bytes
    #: ``DIGEST_SIZE`` bytes per row.
    digests: bytes
    mtimes: array[float]
    #: The versions not of the form the fingerprint and digest make, by row.
    odd_versions: dict[int, str]
    #: The rows by (mtime, job_id), when known: a start from an unchanged
    #: snapshot takes them as they are, instead of sorting a million.
    by_time: array[int] | None = None


def version_parts(fingerprint: Fingerprint, version: str) -> bytes | None:
    """The version's digest, when the version is the one ``fingerprint`` and
    it make (``jobfiles.version_of``); None when it is not of that form."""
    parts = version.split("-")
    if len(parts) != 3 or len(parts[2]) != 2 * DIGEST_SIZE:
        return None
    try:
        digest = bytes.fromhex(parts[2])
    except ValueError:
        return None
    if make_version(fingerprint.inode, fingerprint.ctime_ns, digest) != version:
        return None
    return digest


def make_version(inode: int, ctime_ns: int, digest: bytes) -> str:
    return f"{inode:x}-{ctime_ns:x}-{digest.hex()}"


class JobColumns:
    __slots__ = (
        "_by_status",
        "_by_time",
        "_code_of",
        "_codes",
        "_counts",
        "_digests",
        "_fps",
        "_ids",
        "_mtimes",
        "_odd",
        "_positions",
        "_slot",
        "_texts",
        "head",
    )

    def __init__(self) -> None:
        self.head = 0
        self._slot: dict[str, int] = {}
        # Per slot; a dead slot's job id is None.
        self._ids: list[str | None] = []
        self._positions = array("q")
        self._mtimes = array("d")
        self._fps = bytearray()
        self._digests = bytearray()
        self._codes = array("i")
        self._odd: dict[int, str] = {}
        # Status texts by code, and codes by text: one string per status.
        self._texts: list[str] = []
        self._code_of: dict[str, int] = {}
        self._counts: Counter[int] = Counter()
        # Live slots by (mtime, job_id).
        self._by_time = array("i")
        # Slots in change order, per status code (dead ones among them).
        self._by_status: dict[int, array[int]] = {}

    def __len__(self) -> int:
        return len(self._slot)

    def next_position(self, at_least: int = 0) -> int:
        """Take the next position (no smaller than ``at_least``)."""
        self.head = max(self.head + 1, at_least)
        return self.head

    # -- one row ------------------------------------------------------------

    def version_of(self, job_id: str) -> str | None:
        slot = self._slot.get(job_id)
        return None if slot is None else self._version(slot)

    def fingerprint_of(self, job_id: str) -> bytes | None:
        """The packed fingerprint the job's file had when read."""
        slot = self._slot.get(job_id)
        if slot is None:
            return None
        return bytes(self._fps[slot * FP_SIZE : (slot + 1) * FP_SIZE])

    def refingerprint(self, job_id: str, fingerprint: Fingerprint) -> None:
        """The job's file seen again with the same version."""
        slot = self._slot[job_id]
        self._fps[slot * FP_SIZE : (slot + 1) * FP_SIZE] = FINGERPRINT.pack(
            *fingerprint
        )

    def get(self, job_id: str) -> Row | None:
        slot = self._slot.get(job_id)
        return None if slot is None else self._row(slot, job_id)

    def position_of(self, job_id: str) -> int | None:
        slot = self._slot.get(job_id)
        return None if slot is None else self._positions[slot]

    def set(
        self,
        job_id: str,
        fingerprint: Fingerprint,
        mtime: float,
        version: str,
        status: str | None,
        position: int,
    ) -> None:
        """Record the job's row; ``position`` above every earlier one."""
        self.discard(job_id)
        slot = len(self._ids)
        self._slot[job_id] = slot
        self._ids.append(job_id)
        self._positions.append(position)
        self._mtimes.append(mtime)
        self._fps += FINGERPRINT.pack(*fingerprint)
        digest = version_parts(fingerprint, version)
        if digest is None:
            self._odd[slot] = version
            digest = bytes(DIGEST_SIZE)
        self._digests += digest
        code = self._code(status)
        self._codes.append(code)
        self._counts[code] += 1
        i = bisect_left(self._by_time, (mtime, job_id), key=self._time_key)
        self._by_time.insert(i, slot)
        if code != NO_STATUS:
            self._by_status.setdefault(code, array("i")).append(slot)
        if len(self._ids) > 2 * len(self._slot) + 1024:
            self._compact()

    def discard(self, job_id: str) -> bool:
        """Forget the job; False when it was not there."""
        slot = self._slot.pop(job_id, None)
        if slot is None:
            return False
        i = bisect_left(self._by_time, (self._mtimes[slot], job_id), key=self._time_key)
        del self._by_time[i]
        self._counts[self._codes[slot]] -= 1
        self._ids[slot] = None
        self._odd.pop(slot, None)
        return True

    def discard_many(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self.discard(job_id)

    def clear(self) -> None:
        self.load(empty_columns(), array("q"), self.head)

    # -- in bulk --------------------------------------------------------------

    def load(
        self,
        columns: Columns,
        positions: array[int],
        head: int,
        slot_of: dict[str, int] | None = None,
    ) -> None:
        """Hold ``columns`` (rows in change order, at ``positions``) and
        nothing else; the head moves to ``head``. ``slot_of``: each row's
        number by job id, when the caller made it already."""
        n = len(columns.job_ids)
        self.head = head
        self._ids = list[str | None](columns.job_ids)
        if slot_of is None:
            slot_of = dict(zip(columns.job_ids, range(n), strict=True))
        self._slot = slot_of
        self._positions = positions
        self._mtimes = columns.mtimes
        self._fps = bytearray(columns.fingerprints)
        self._digests = bytearray(columns.digests)
        self._codes = columns.codes
        self._odd = dict(columns.odd_versions)
        self._texts = list(columns.statuses)
        self._code_of = {text: code for code, text in enumerate(self._texts)}
        self._counts = Counter(self._codes)
        self._by_time = (
            time_order(columns.mtimes, columns.job_ids)
            if columns.by_time is None
            else columns.by_time
        )
        # Made here, not on the first page that filters by status: that
        # page would hold the lock (and every read) while it is made.
        self._by_status = status_orders(self._codes, self._counts)

    def columns(self) -> Columns:
        """The live rows in change order, as columns (a snapshot's)."""
        live = [slot for slot, job_id in enumerate(self._ids) if job_id is not None]
        if len(live) == len(self._ids):
            job_ids = [job_id for job_id in self._ids if job_id is not None]
            return Columns(
                job_ids,
                array("i", self._codes),
                list(self._texts),
                bytes(self._fps),
                bytes(self._digests),
                array("d", self._mtimes),
                dict(self._odd),
                array("i", self._by_time),
            )
        return gather(self._live_columns(), live)

    def _live_columns(self) -> Columns:
        """Every slot, dead ones too, as columns (without copying them)."""
        return Columns(
            self._ids,  # type: ignore[arg-type]  # dead slots are gathered out
            self._codes,
            self._texts,
            self._fps,  # type: ignore[arg-type]
            self._digests,  # type: ignore[arg-type]
            self._mtimes,
            self._odd,
            self._by_time,
        )

    def _compact(self) -> None:
        live = [slot for slot, job_id in enumerate(self._ids) if job_id is not None]
        positions = array("q", [self._positions[slot] for slot in live])
        self.load(gather(self._live_columns(), live), positions, self.head)

    # -- queries ----------------------------------------------------------------

    def window(self, cutoff: float) -> Window:
        """The Toolkit listing of jobs last written at or after ``cutoff``."""
        by_time, mtimes = self._by_time, self._mtimes
        start = bisect_left(by_time, cutoff, key=mtimes.__getitem__)
        ids, codes = self._ids, self._codes
        tails = [f'":{text}' for text in self._texts]
        # Made here, not kept: a listing member each was 89 bytes a job.
        members = [
            f'"{ids[slot]}{tails[code]}'
            for slot in by_time[start:]
            if (code := codes[slot]) != NO_STATUS
        ]
        # The first entry in the window, listed or not: no listed job is
        # older, so the listing stays exact at least that long.
        oldest = mtimes[by_time[start]] if start < len(by_time) else None
        return Window(members, oldest)

    def before(self, cutoff: float) -> Iterator[Row]:
        """Rows last written before ``cutoff``, oldest first (ties by id)."""
        mtimes = self._mtimes
        for slot in self._by_time:
            if mtimes[slot] >= cutoff:
                return
            yield self._row(slot, self._ids[slot] or "")

    def job_ids(self) -> list[str]:
        return list(self._slot)

    def page(self, query: Query) -> list[Row]:
        """Rows of ``query`` without records; owners add them."""
        found: list[Row] = []
        ids, mtimes, codes = self._ids, self._mtimes, self._codes
        cutoff = query.cutoff
        for slot in self._slots_after(query.statuses, query.after):
            job_id = ids[slot]
            if job_id is None or codes[slot] == NO_STATUS:
                continue  # dead: the job changed again since
            if cutoff is not None and mtimes[slot] < cutoff:
                continue
            found.append(self._row(slot, job_id))
            if len(found) >= query.limit:
                break
        return found

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        if cutoff is None:
            counted: Iterable[tuple[int, int]] = self._counts.items()
        else:
            by_time, codes = self._by_time, self._codes
            start = bisect_left(by_time, cutoff, key=self._mtimes.__getitem__)
            counted = Counter([codes[slot] for slot in by_time[start:]]).items()
        texts = self._texts
        return {
            texts[code]: n
            for code, n in counted
            if n and code != NO_STATUS and (statuses is None or texts[code] in statuses)
        }

    # -- internals -------------------------------------------------------------

    def _row(self, slot: int, job_id: str) -> Row:
        code = self._codes[slot]
        return Row(
            job_id,
            None if code == NO_STATUS else self._texts[code],
            self._mtimes[slot],
            self._version(slot),
            self._positions[slot],
        )

    def _version(self, slot: int) -> str:
        odd = self._odd.get(slot)
        if odd is not None:
            return odd
        inode, _, _, ctime_ns = FINGERPRINT.unpack_from(self._fps, slot * FP_SIZE)
        start = slot * DIGEST_SIZE
        return make_version(
            inode, ctime_ns, bytes(self._digests[start : start + DIGEST_SIZE])
        )

    def _time_key(self, slot: int) -> tuple[float, str]:
        return self._mtimes[slot], self._ids[slot] or ""

    def _code(self, status: str | None) -> int:
        if status is None:
            return NO_STATUS
        code = self._code_of.get(status)
        if code is None:
            code = self._code_of[status] = len(self._texts)
            self._texts.append(status)
        return code

    def _slots_after(
        self, statuses: frozenset[str] | None, after: int
    ) -> Iterator[int]:
        positions = self._positions
        if statuses is None:
            # Indexing, not slicing: a page from the start of a million
            # slots must not copy them all first.
            return iter(range(bisect_left(positions, after + 1), len(positions)))
        by_status = self._by_status
        tails = [
            _tail(by_status[code], positions, after)
            for text in statuses
            if (code := self._code_of.get(text)) is not None and code in by_status
        ]
        if len(tails) == 1:
            return tails[0]
        # Slots are in change order: merging them merges the positions.
        return heapq.merge(*tails)


def _tail(slots: array[int], positions: array[int], after: int) -> Iterator[int]:
    for i in range(
        bisect_left(slots, after + 1, key=positions.__getitem__), len(slots)
    ):
        yield slots[i]


def status_orders(codes: array[int], counts: Counter[int]) -> dict[int, array[int]]:
    """The rows of each status code, in row order (a pass of C-level
    iterators per code: a start has a million rows and a few statuses)."""
    rows = range(len(codes))
    return {
        code: array("i", compress(rows, map(operator.eq, codes, repeat(code))))
        for code, n in counts.items()
        if n and code != NO_STATUS
    }


def time_order(mtimes: array[float], job_ids: list[str]) -> array[int]:
    """Rows by (mtime, job_id), as row numbers."""
    # A C-level sort of the floats alone (a list's items, not an array's:
    # those are made anew on each access); rows of equal mtimes (coarse
    # clocks: a burst of writes in one tick) then put the whole order by
    # (mtime, job_id).
    keys = mtimes.tolist()
    order = sorted(range(len(keys)), key=keys.__getitem__)
    ordered = sorted(keys)
    if any(map(operator.eq, ordered, islice(ordered, 1, None))):
        order = sorted(range(len(keys)), key=lambda row: (keys[row], job_ids[row]))
    return array("i", order)


def gather(columns: Columns, rows: list[int]) -> Columns:
    """The ``rows`` of ``columns``, in that order."""
    job_ids, codes, mtimes = columns.job_ids, columns.codes, columns.mtimes
    fps, digests = columns.fingerprints, columns.digests
    odd = columns.odd_versions
    return Columns(
        [job_ids[row] for row in rows],
        array("i", [codes[row] for row in rows]),
        list(columns.statuses),
        b"".join([fps[r * FP_SIZE : (r + 1) * FP_SIZE] for r in rows]),
        b"".join([digests[r * DIGEST_SIZE : (r + 1) * DIGEST_SIZE] for r in rows]),
        array("d", [mtimes[row] for row in rows]),
        {new: odd[row] for new, row in enumerate(rows) if row in odd} if odd else {},
        None
        if columns.by_time is None
        else _renumbered(columns.by_time, rows, len(job_ids)),
    )


def _renumbered(by_time: array[int], rows: list[int], n: int) -> array[int]:
    """The time order of ``rows`` (of ``n``; a subset, in any order),
    numbered as in it: the rows left keep their order among themselves."""
    new_of = array("i", [-1]) * n
    for new, row in enumerate(rows):
        new_of[row] = new
    return array("i", [new for new in map(new_of.__getitem__, by_time) if new >= 0])


def empty_columns() -> Columns:
    return Columns([], array("i"), [], b"", b"", array("d"), {}, array("i"))
