"""Answers' record texts kept between reads, each with what proves it current.

A store that reads a file or a database for each ``read_text`` keeps the
texts of the jobs it read last and gives one back only against the same
proof it was kept with (a file's fingerprint; a database's change counters).
Checking the proof costs a fraction of the read it saves, and a job that
changed since is never answered from memory: its proof no longer matches.

Bounded in bytes (``?cache=`` in the store's URL; 0 keeps nothing); the job
read longest ago goes first; a 32 KiB filter besides. A job is kept from
its second read on (``wants``, ``read_once``): one read once — a client
asking about many jobs once each — neither pays for a proof nor pushes out
the jobs being polled. Thread-safe: a hit takes no lock.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from jobstatus_core import Row

#: The size a store keeps by default: a few thousand Toolkit records.
DEFAULT_CACHE_BYTES = 16 << 20
#: What an entry costs beside its text and its row's status text: its key,
#: row, version, proof and links (measured with tracemalloc).
ENTRY_OVERHEAD = 560

#: Bits of the filter of jobs asked about once (32 KiB): one per hash of an
#: id, all cleared once an eighth are set. A false "asked before" (another
#: id's bit) only keeps a job one read early.
SEEN_BITS = 1 << 18

P = TypeVar("P")


class KeptRecords(Generic[P]):
    """Job id -> (proof, row, text), the most recently read last."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[P, Row, str]] = OrderedDict()
        self._bytes = 0
        # Keeping and clearing: a hit reads without it (each OrderedDict
        # call is atomic under the GIL).
        self._lock = threading.Lock()

        self._seen = bytearray(SEEN_BITS // 8)
        self._seen_count = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._entries

    def wants(self, job_id: str) -> bool:
        """Whether a read of the job should be kept (and its proof read):
        it is kept already, or a read of it was noted (``read_once``) since
        the filter's last clearing. Races between threads only keep a job
        one read early or late."""
        if job_id in self._entries:
            return True
        bit = hash(job_id) & (SEEN_BITS - 1)
        return bool(self._seen[bit >> 3] & (1 << (bit & 7)))

    def read_once(self, job_id: str) -> None:
        """A read of the job was done and not kept: the next one will be.
        Noted only once the read is done, so that an attempt refused on the
        event loop and made again on a thread counts once."""
        bit = hash(job_id) & (SEEN_BITS - 1)
        seen = self._seen
        seen[bit >> 3] |= 1 << (bit & 7)
        self._seen_count += 1
        if self._seen_count > SEEN_BITS // 8:
            self._seen = bytearray(SEEN_BITS // 8)
            self._seen_count = 0

    def get(self, job_id: str, proof: P) -> tuple[Row, str] | None:
        """The kept row and text, if kept with ``proof``."""
        entry = self._entries.get(job_id)
        if entry is None or entry[0] != proof:
            return None
        # Not contextlib.suppress: this is every hit's path.
        try:  # noqa: SIM105
            self._entries.move_to_end(job_id)
        except KeyError:
            pass  # dropped by another thread just now; the answer still holds
        return entry[1], entry[2]

    def keep(self, job_id: str, proof: P, row: Row, text: str) -> None:
        """Keep ``text`` as the job's, true while ``proof`` holds. A text
        larger than a sixteenth of the bound is not kept: one record never
        empties the cache."""
        size = _size(row, text)
        if size > self.max_bytes // 16:
            return
        with self._lock:
            old = self._entries.pop(job_id, None)
            if old is not None:
                self._bytes -= _size(old[1], old[2])
            self._entries[job_id] = (proof, row, text)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped_row, dropped) = self._entries.popitem(last=False)
                self._bytes -= _size(dropped_row, dropped)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def size(self) -> int:
        """Bytes counted against the bound."""
        return self._bytes


def _size(row: Row, text: str) -> int:
    """The bytes an entry holds, as counted against the bound."""
    status = 0 if row.status is None else sys.getsizeof(row.status)
    return sys.getsizeof(text) + status + ENTRY_OVERHEAD
