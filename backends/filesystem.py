"""``file:///path``: the Toolkit's own layout, ``<path>/jobs/<job_id>.json``.

"Last written" is the file's mtime. Listings, pages and counts are answered
from a watchdog index (see ``fsindex``) unless the URL says ``?index=off`` or
no observer can start; then every query scans the directory, as the Toolkit
does (see ``jobtable.ScannedJobs``). Writes through the store take a lock
file beside ``jobs/`` (docs/stores.md: what it means for other writers).

``FileStore.from_url`` opens a ``WatchedFileStore`` — ``Notifying``: its
index calls the subscribers when the observer sees ``jobs/`` change, and
the store after its own writes — unless ``?index=off``: a store that only
scans hears of nothing, so it is a plain ``FileStore``, whose mark the
change hub polls.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

from jobstatus_core import (
    ConfigError,
    Mark,
    Row,
    StoreError,
    StoreUnavailable,
    TriesInline,
    VersionedStoreBase,
    WouldBlock,
    checked_at,
    checked_job_id,
    jsontext,
    nowait,
)
from jobstatus_core.errors import one_line_reason
from jobstatus_core.rows import Query, Window

from . import jobfiles, turnmemo
from .breaker import Breaker
from .fsindex import IndexUnavailable, JobIndex, ObserverFactory
from .jobtable import ScannedJobs
from .keptrecords import DEFAULT_CACHE_BYTES, KeptRecords
from .subscribers import Subscribers
from .urloptions import parse_store_url

logger = logging.getLogger("jobstatus.filesystem")

DEFAULT_RECONCILE_SECONDS = 30.0
#: The file store's change order is made of ctimes, the same in every
#: process: it has one life, whatever the process (docs/stores.md).
EPOCH = "files"
#: Beside ``jobs/``, never in it: ``jobs/`` is the Toolkit's.
LOCK_PATH = os.path.join(".jobstatus", "lock")
#: A file's text is kept for ``read_text`` only once its ctime is this far
#: behind the clock when the read began: a file rewritten in place within
#: one tick of a coarse file-system clock, at the same size, keeps its
#: fingerprint, and a write after the read can only move a ctime this old.
SETTLED_NS = 2_000_000_000

T = TypeVar("T")


class FileStore(VersionedStoreBase):
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        index: bool = True,
        reconcile_interval: float = DEFAULT_RECONCILE_SECONDS,
        max_file_size: int = jobfiles.DEFAULT_MAX_FILE_SIZE,
        observer_factory: ObserverFactory | None = None,
        durable: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        background: bool = False,
    ) -> None:
        self.root = os.path.abspath(root)
        #: Whether each write reaches the disk before it shows (``?durable=``).
        self.durable = durable
        if not os.path.isdir(self.root):
            there = os.path.lexists(self.root)
            what = "is not a directory" if there else "does not exist"
            raise ConfigError(f"file store: {self.root!r} {what}")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise ConfigError(f"file store: {self.root!r} is not readable")
        self.jobs_dir = os.path.join(self.root, "jobs")
        self.max_file_size = max_file_size
        self.lock_path = os.path.join(self.root, LOCK_PATH)
        # Queries answered by scanning (no index, or the index failed).
        self._scan = ScannedJobs(self.jobs_dir, max_file_size)
        # Inline reads (``TriesInline``): timed, and tried only while the
        # file system can read without waiting (one probe for its life).
        self._breaker = Breaker()
        self._reads_nowait = True
        #: The files ``read_many`` left out, as they were when it logged them.
        self._unreadable: dict[str, jobfiles.Fingerprint] = {}
        # ``read_text``'s answers, each kept with the index's generation and
        # its file's fingerprint.
        self._kept: KeptRecords[tuple[int, ...]] | None = (
            KeptRecords(cache_bytes) if cache_bytes else None
        )
        # The mark and kept jobs' fingerprints, for the rest of the event
        # loop's turn.
        self._marks: turnmemo.TurnMemo[str, Mark] = turnmemo.TurnMemo()
        self._fingerprints: turnmemo.TurnMemo[str, tuple[int, int, int, int] | None] = (
            turnmemo.TurnMemo()
        )
        self.index: JobIndex | None = None
        if index:
            self.index = self._start_index(
                reconcile_interval, observer_factory, background
            )

    @classmethod
    def from_url(
        cls, url: str, *, index: bool = True, background: bool = False
    ) -> FileStore:
        """``file:///abs/path[?index=off][&reconcile=SECONDS][&max_file_size=BYTES]
        [&expire=delete][&durable=off][&cache=BYTES]``: see ``open``.
        ``index``: whether the store indexes when the URL does not say."""
        parsed = parse_store_url(url)
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise parsed.fail("use file:///absolute/path")
        return FileStore.open(
            unquote(parsed.path),
            index=parsed.options.get("index", index),
            expire=parsed.options.get("expire"),
            durable=parsed.options.get("durable", True),
            cache_bytes=parsed.options.get("cache", DEFAULT_CACHE_BYTES),
            reconcile_interval=parsed.options.get(
                "reconcile", DEFAULT_RECONCILE_SECONDS
            ),
            max_file_size=parsed.options.get(
                "max_file_size", jobfiles.DEFAULT_MAX_FILE_SIZE
            ),
            background=background,
        )

    @staticmethod
    def open(
        root: str | os.PathLike[str],
        *,
        index: bool = True,
        expire: Literal["delete"] | None = None,
        durable: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        reconcile_interval: float = DEFAULT_RECONCILE_SECONDS,
        max_file_size: int = jobfiles.DEFAULT_MAX_FILE_SIZE,
        background: bool = False,
    ) -> FileStore:
        """The store a URL's options name: ``WatchedFileStore``, or with
        ``index=False`` a scanning ``FileStore``; with ``expire="delete"``
        their ``Expiring`` kinds, which delete expired jobs' files;
        ``durable=False`` skips the flush before each write's rename;
        ``cache_bytes``: how much of the texts ``read_text`` answered to keep
        (``keptrecords``; 0: none); ``background``: the index is built on a
        thread of its own, every query answering ``StoreUnavailable`` until
        it is done (what a server wants: it answers at once, ``503``, and is
        ready when the index is)."""
        # Imported here: the expiring kinds are subclasses of these.
        from .fileexpiry import ExpiringFileStore, ExpiringWatchedFileStore

        if not index:
            kind = FileStore if expire is None else ExpiringFileStore
            return kind(
                root,
                index=False,
                max_file_size=max_file_size,
                durable=durable,
                cache_bytes=cache_bytes,
            )
        watched = WatchedFileStore if expire is None else ExpiringWatchedFileStore
        return watched(
            root,
            reconcile_interval=reconcile_interval,
            max_file_size=max_file_size,
            durable=durable,
            cache_bytes=cache_bytes,
            background=background,
        )

    def _start_index(
        self,
        reconcile_interval: float,
        observer_factory: ObserverFactory | None,
        background: bool,
    ) -> JobIndex | None:
        options: dict[str, Any] = {
            "reconcile_interval": reconcile_interval,
            "max_file_size": self.max_file_size,
        }
        if observer_factory is not None:
            options["observer_factory"] = observer_factory
        index = JobIndex(self.root, on_change=self._changed, **options)
        try:
            index.start(background=background)
        except Exception as exc:
            # inotify watches exhausted, an unsupported file system, ...
            logger.warning("no file observer (%s); every listing will scan", exc)
            index.close()
            return None
        return index

    def read(self, job_id: str) -> Row | None:
        return self._read(job_id, jobfiles.RETRY_DELAYS_SECONDS)

    def _read(self, job_id: str, waits: Sequence[float]) -> Row | None:
        with self._attempt() as inline:
            # One open, fstat and read: the version comes from the same fstat.
            found = jobfiles.read_job(
                self.jobs_dir, job_id, self.max_file_size, nowait=inline, waits=waits
            )
            if found is None:
                return None
            return self._row(job_id, found, self._observe(job_id, found))

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        """Rows of the jobs whose files are job records now. A file that does
        not parse is read again after ``read``'s waits, all such files
        together, and left out if it still does not, as listings leave it
        out: one file rewritten in place must not fail a batch, a wait or a
        feed of many jobs (``read`` alone answers it an error)."""
        rows: dict[str, Row] = {}
        unreadable: dict[str, jobfiles.UnreadableRecord] = {}
        left: Sequence[str] = job_ids
        waits = iter(jobfiles.RETRY_DELAYS_SECONDS)
        while True:
            for job_id in left:
                try:
                    row = self._read(job_id, ())
                except jobfiles.UnreadableRecord as exc:
                    unreadable[job_id] = exc
                    continue
                unreadable.pop(job_id, None)
                self._unreadable.pop(job_id, None)
                if row is not None:
                    rows[job_id] = row
            # Not waited for again: a file too large, or one that failed
            # as it is now already (logged then), as listings skip it.
            left = [
                job_id
                for job_id, why in unreadable.items()
                if not why.final and self._unreadable.get(job_id) != why.fingerprint
            ]
            wait = next(waits, None)
            if not left or wait is None:
                break
            if nowait.asked():
                raise WouldBlock("a job file is read again after a wait")
            time.sleep(wait)
        for job_id, why in unreadable.items():
            # Logged once per state of the file, as listings log it: a batch
            # polled every second must not log it every second.
            if self._unreadable.get(job_id) != why.fingerprint:
                self._unreadable[job_id] = why.fingerprint
                logger.warning("skipping job file: %s", why)
        return rows

    def read_text(self, job_id: str) -> tuple[Row, str] | None:
        """``RecordTexts``: the file's record as answers write it; from
        memory while the file's fingerprint is the one it was kept with and
        the index has not forgotten its jobs since (their positions)."""
        kept = self._kept
        if kept is not None:
            # Opened already this turn of the loop (turnmemo): no attempt
            # needed, the disk is not touched.
            now = self._fingerprints.get(job_id)
            if now is not None:
                jobs = self._scan if self.index is None else self.index
                hit = kept.get(job_id, (jobs.generation, *now))
                if hit is not None:
                    return hit
        with self._attempt() as inline:
            jobs = self._scan if self.index is None else self.index
            # Before the read: a rebuild of the index after it only makes
            # what is kept miss.
            generation = jobs.generation
            if kept is not None and job_id in kept:
                # Kept: a valid job id, so the path stays in jobs/. Opened
                # once per turn of the event loop (turnmemo): every poll
                # the turn answers arrived before it.
                now = self._fingerprints.value(
                    job_id,
                    lambda: jobfiles.current_fingerprint(self.jobs_dir, job_id),
                )
                if now is not None:
                    hit = kept.get(job_id, (generation, *now))
                    if hit is not None:
                        return hit
            began_ns = time.time_ns()
            found = jobfiles.read_job(
                self.jobs_dir, job_id, self.max_file_size, nowait=inline
            )
            if found is None:
                return None
            position = self._observe(job_id, found)
        status, has_status = jobfiles.status_of(found.record)
        row = Row(
            job_id,
            jsontext.encode(status) if has_status else None,
            found.mtime,
            found.version,
            position,
        )
        text = jsontext.encode(found.record)
        if kept is not None and found.ctime_ns < began_ns - SETTLED_NS:
            if kept.wants(job_id):
                # A time past 2262 (wrapped in the fingerprint) never
                # matches the plain one above, so is read every time.
                kept.keep(job_id, (generation, *found.fingerprint), row, text)
            else:
                kept.read_once(job_id)
        return row, text

    def window(self, cutoff: float) -> Window:
        with self._attempt():
            return self._query(lambda jobs: jobs.window(cutoff))

    def page(self, query: Query) -> list[Row]:
        with self._attempt() as inline:
            rows = self._query(lambda jobs: jobs.page(query))
            if not query.records:
                return rows
            return [
                row
                for row in (self._with_record(row, inline) for row in rows)
                if row is not None
            ]

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        with self._attempt():
            return self._query(lambda jobs: jobs.counts(statuses, cutoff))

    def mark(self) -> Mark:
        # Once per turn of the event loop (turnmemo): the index's head takes
        # its lock, the events pending and a stat of jobs/ to read.
        found = self._marks.get(EPOCH)
        if found is not None:
            return found
        with self._attempt():
            return self._marks.value(
                EPOCH, lambda: Mark(EPOCH, self._query(lambda jobs: jobs.head()))
            )

    def jobs(self) -> list[tuple[str, float]]:
        if not self.exists():
            return []
        return [
            (job_id, info.st_mtime) for job_id, info in jobfiles.scan(self.jobs_dir)
        ]

    def exists(self) -> bool:
        with self._attempt():
            return os.path.isdir(self.jobs_dir)

    def check(self) -> None:
        """A ``jobs`` entry that is there must be a directory this process can
        list; a missing one is allowed (the Toolkit creates it later)."""
        try:
            with os.scandir(self.jobs_dir):
                pass
        except FileNotFoundError:
            return
        except OSError as exc:
            reason = one_line_reason(exc)
            raise ConfigError(
                f"file store: {self.jobs_dir!r} cannot be listed: {reason}"
            ) from None

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        at = checked_at(at)
        self._require_built()
        with self._exclusive(f"job {job_id}"):
            self._write(job_id, record, at)

    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        job_id = checked_job_id(record)
        at = checked_at(at)
        self._require_built()
        with self._exclusive(f"job {job_id}"):
            current = jobfiles.read_job(self.jobs_dir, job_id, self.max_file_size)
            if (None if current is None else current.version) != expected:
                return None
            return self._write(job_id, record, at)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None

    def _write(self, job_id: str, record: Mapping[str, Any], at: float | None) -> str:
        """Write under the lock; returns the version written."""
        # A directory removed with its files a moment ago, before the
        # observer said so, is rebuilt from the one this write creates.
        recreated = self.index is not None and not os.path.isdir(self.jobs_dir)
        try:
            written = jobfiles.write_job(
                self.jobs_dir,
                record,
                job_id,
                at,
                durable=self.durable,
                max_size=self.max_file_size,
            )
        except OSError as exc:
            raise StoreError(
                f"could not write job {job_id}: {one_line_reason(exc)}"
            ) from exc
        if recreated and self.index is not None:
            self.index.recheck()
        self._observe(job_id, written)
        self._changed()
        return written.version

    def _changed(self) -> None:
        """``jobs/`` may have changed; any thread. Only a watched store has
        anybody to tell."""

    @contextlib.contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        """Hold the store's write lock: one writer through jobstatus at a
        time, across threads and processes (each call opens its own file
        description, so ``flock`` excludes threads of one process too)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self.lock_path, flags, 0o644)
            except FileNotFoundError:
                # Its directory is made by the first write, not checked by each.
                os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
                fd = os.open(self.lock_path, flags, 0o644)
        except OSError as exc:
            raise StoreError(
                f"could not write {what}: the store's lock file: {one_line_reason(exc)}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            turnmemo.wrote()
            os.close(fd)  # releases the lock

    def _attempt(self) -> _Attempt:
        """A read, inline when asked (``nowait``): ``with`` gives whether it is.

        Only an index answers without scanning the directory: without one,
        or once the file system has refused ``RWF_NOWAIT``, every inline
        attempt is refused. The rest are timed by the breaker, which bounds
        what it cannot refuse ahead: an ``open`` whose path lookup meets a
        cold inode, a wait for the index's lock while a reconcile round or
        another request's refresh reads files under it.
        """
        return _Attempt(self)

    def _refuse_inline(self) -> None:
        """For calls that read with ordinary I/O: on a thread, always."""
        if nowait.asked():
            raise WouldBlock("this call reads on threads")

    def _observe(self, job_id: str, found: jobfiles.JobFile) -> int:
        return self._query(lambda jobs: jobs.observe(job_id, found))

    def _require_built(self) -> None:
        """``StoreUnavailable`` while the index is built (``background``):
        not a scan of every file per request meanwhile (the index is that
        scan, under way), and a write refused before it is made, not told
        it failed once it is on disk."""
        if self.index is not None and not self.index.built:
            raise StoreUnavailable("the job index is still being built")

    def _query(self, call: Callable[[JobIndex | ScannedJobs], T]) -> T:
        if self.index is not None:
            self._require_built()
            try:
                return call(self.index)
            except IndexUnavailable:
                # No watch on the jobs directory now (said by the index).
                if nowait.asked():
                    raise WouldBlock("the job index is not watching") from None
            except Exception:
                if nowait.asked():
                    # Scanning instead is for a thread, which tries again.
                    raise WouldBlock("the job index failed") from None
                logger.exception("the job index failed; scanning instead")
        return call(self._scan)

    def _with_record(self, row: Row, inline: bool) -> Row | None:
        # A file that changed since it was indexed is answered as it is now,
        # at its indexed place; the index places it again later (a repeat,
        # never a skip). One that is gone or broken now is left out.
        try:
            found = jobfiles.read_once(
                self.jobs_dir, row.job_id, self.max_file_size, nowait=inline
            )
        except (jobfiles.BadFile, OSError):
            return None
        return None if found is None else self._row(row.job_id, found, row.position)

    @staticmethod
    def _row(job_id: str, found: jobfiles.JobFile, position: int) -> Row:
        status, has_status = jobfiles.status_of(found.record)
        text = jsontext.encode(status) if has_status else None
        return Row(job_id, text, found.mtime, found.version, position, found.record)


class _Attempt:
    # A class, not contextlib's decorator: it is on every read's path.
    __slots__ = ("_started", "_store")

    def __init__(self, store: FileStore) -> None:
        self._store = store
        self._started: float | None = None

    def __enter__(self) -> bool:
        if not nowait.asked():
            return False
        store = self._store
        if store.index is None or not store._reads_nowait:
            raise WouldBlock("the file store reads on threads")
        self._started = store._breaker.begin()
        return True

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._started is None:
            return
        store = self._store
        store._breaker.ended(self._started)
        if isinstance(error, jobfiles.NoWaitUnsupported):
            store._reads_nowait = False
            logger.debug("no RWF_NOWAIT reads in %s (%s)", store.jobs_dir, error)


class WatchedFileStore(FileStore, TriesInline):
    """The file store with its index, declared ``Notifying``: subscribers are
    called when the observer sees a file in ``jobs/`` change (the Toolkit's
    own writes included, within the observer's latency), when a reconcile
    round finds what no event said, and after each write through the store.

    Without an observer (none could start) it still answers by scanning and
    calls subscribers after its own writes; the change hub's safety poll of
    the mark then finds the others' within a second.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        reconcile_interval: float = DEFAULT_RECONCILE_SECONDS,
        max_file_size: int = jobfiles.DEFAULT_MAX_FILE_SIZE,
        observer_factory: ObserverFactory | None = None,
        durable: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        background: bool = False,
    ) -> None:
        # Before the index starts: its first events may come at once.
        self._subscribers = Subscribers()
        super().__init__(
            root,
            index=True,
            reconcile_interval=reconcile_interval,
            max_file_size=max_file_size,
            observer_factory=observer_factory,
            durable=durable,
            cache_bytes=cache_bytes,
            background=background,
        )

    def indexed(self) -> int:
        index = self.index
        return 0 if index is None else len(index)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def _changed(self) -> None:
        # Often watchdog's dispatcher thread: a failing subscriber must stop
        # neither the others nor the observer (Subscribers sees to it).
        self._subscribers.notify()
