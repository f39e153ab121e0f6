"""A watchdog-maintained index of the jobs directory: listing in O(log n + matches),
pages in change order and kept counts (the rows live in a ``JobTable``).

The observer's handler only records which job changed; the changed files are
read by the next listing (or by the reconciler), so a burst of writes costs one
read per job, not one per event. An inotify queue overflow (watchdog 7.1's
``EventsLostEvent``) has the next query rescan the directory; older watchdogs
drop it silently, so a reconciler thread also compares the index with the
directory every ``reconcile_interval`` seconds and restarts a dead observer.

When the jobs directory cannot be watched (the inotify watch limit reached,
at start or when it is made again later), the index refuses with
``IndexUnavailable`` and the store scans instead, until a watch succeeds.

The index says when ``jobs/`` may have changed by calling ``on_change``: from
the dispatcher thread for each event about a job file or the directory, and
from the reconciler when a round moved the table's head (missed events, a
restarted observer). It is a hint to read again, never the change itself.

Watchdog watches a symlink itself, not where it leads: the root and the jobs
directory are watched at the paths they resolve to, and each reconcile round
checks that they still resolve there (a link may be pointed elsewhere since).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

try:
    from watchdog.events import EventsLostEvent

    #: An overflow of the kernel's event queue: events were lost.
    LOST: tuple[type[FileSystemEvent], ...] = (EventsLostEvent,)
except ImportError:  # watchdog < 7.1 does not report it; the reconciler finds it
    LOST = ()
try:
    from watchdog.events import FileAttribEvent

    #: A file's times or permissions changed alone (``touch``, ``cp -p``
    #: putting the old time back, ``chmod``): newer watchdogs report it apart
    #: from a modification, and it moves a job in or out of the window.
    ATTRIB: tuple[type[FileSystemEvent], ...] = (FileAttribEvent,)
except ImportError:  # older watchdogs report it as a modification
    ATTRIB = ()
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from jobstatus_core import Row
from jobstatus_core.rows import Query, Stale, Window

from . import fssnapshot, jobfiles
from .jobtable import BuildStopped, JobTable

ObserverFactory = Callable[[], BaseObserver]

#: How often a serving index writes its snapshot, when it changed since the
#: last one (it is also written on close): a crash loses at most this much
#: of it, and the files changed since are read at the next start.
SNAPSHOT_INTERVAL_SECONDS = 600.0

#: How often a query looks where the root and the jobs directory lead (two
#: ``stat``s): a directory renamed into the place of another sends no event
#: to the watches, which follow the one renamed away.
PATHS_CHECK_SECONDS = 0.5

#: How often an index that could not watch the jobs directory tries again
#: (it answers ``IndexUnavailable`` meanwhile: the store scans).
WATCH_RETRY_SECONDS = 5.0


class IndexUnavailable(Exception):
    """The index cannot follow the jobs directory now (no watch on it): the
    store answers from a scan instead, and the index tries again later."""


def _nobody() -> None:
    pass


# Opened/closed-without-write events are left out: every read would cause one.
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    *ATTRIB,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    *LOST,
]

logger = logging.getLogger("jobstatus.filesystem")


class _Recorder(FileSystemEventHandler):
    """Runs on watchdog's dispatcher thread: records what changed, and returns."""

    def __init__(self, index: JobIndex) -> None:
        self.index = index

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, LOST):
            self.index._lost()
            return
        self.index._saw(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.index._saw(os.fsdecode(dest))


class JobIndex:
    """The rows of ``<root>/jobs``, kept current from events. Thread-safe."""

    def __init__(
        self,
        root: str,
        *,
        reconcile_interval: float = 30.0,
        max_file_size: int = jobfiles.DEFAULT_MAX_FILE_SIZE,
        observer_factory: ObserverFactory = Observer,
        on_change: Callable[[], None] = _nobody,
    ) -> None:
        self.root = root
        self._on_change = on_change
        self.jobs_dir = os.path.join(root, "jobs")
        self.reconcile_interval = reconcile_interval
        self._observer_factory = observer_factory
        self._lock = threading.Lock()  # guards the table and the watch state
        self._table = JobTable(self.jobs_dir, max_file_size)
        self._pending_lock = threading.Lock()
        self._pending: set[str] = set()
        self._recheck_dir = True
        self._jobs_watch: ObservedWatch | None = None
        # The paths the root and the jobs directory resolved to when watched:
        # events name files by these.
        self._watched_root: str | None = None
        self._watched_jobs: str | None = None
        # The watched root's (device, inode), and when a query looks next.
        self._root_identity: tuple[int, int] | None = None
        self._paths_due = 0.0
        # When a failed watch of the jobs directory may be tried again, and
        # whether it is unwatched now (said once each way).
        self._watch_retry_at = 0.0
        self._unwatched = False
        self._observer: BaseObserver | None = None
        # The head the reconciler last announced (see reconcile).
        self._announced = 0
        self.snapshot_path = os.path.join(root, fssnapshot.SNAPSHOT_PATH)
        # The watched jobs directory's (device, inode): snapshots name it.
        self._jobs_identity: tuple[int, int] | None = None
        # The head the snapshot on disk holds, as far as this index knows:
        # an unchanged index is not written again.
        self._saved_head: int | None = None
        self._stop = threading.Event()
        self._reconciler = threading.Thread(
            target=self._reconcile_loop, name="jobstatus-reconciler", daemon=True
        )
        # Set once the first build is done (``start``); the thread making it
        # in the background, if any.
        self._built = threading.Event()
        self._builder: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------

    def start(self, *, background: bool = False) -> None:
        """Start the observer and build the index; raises if no observer
        starts. ``background``: the build (a read of every file a snapshot
        does not hold: a minute a million) is made on a thread of its own,
        and ``built`` says when it is done; a server answers meanwhile."""
        with self._lock:
            self._start_observer()
        if not background:
            self._build()
            return
        self._builder = threading.Thread(
            target=self._build_in_background, name="jobstatus-index-build", daemon=True
        )
        self._builder.start()

    @property
    def built(self) -> bool:
        """Whether the first build is done: until then, queries would wait
        for it (``start(background=True)``)."""
        return self._built.is_set()

    def _build(self) -> None:
        with self._lock:
            self._sync_jobs_dir(from_snapshot=True, stop=self._stop)
            self._announced = self._table.head
        self._built.set()
        reason = fssnapshot.unwritable(self.snapshot_path)
        if reason is not None:
            # Said at start, not only at the first save ten minutes on.
            logger.warning(
                "the index snapshot %s cannot be written (%s): every start"
                " reads every job file",
                self.snapshot_path,
                reason,
            )
        self._reconciler.start()

    def _build_in_background(self) -> None:
        started = time.monotonic()
        try:
            self._build()
        except BuildStopped:
            return  # closed meanwhile: no snapshot of half a build
        except Exception as exc:
            # The watch refused (said by it), or a failure while reading:
            # queries then find the directory to look at again, as after
            # any failed rebuild.
            with self._lock:
                self._recheck_dir = True
            self._built.set()
            self._reconciler.start()
            if not isinstance(exc, IndexUnavailable):
                logger.warning("building the job index failed: %s", exc)
            return
        logger.info(
            "job index built: %d jobs in %.1f s",
            len(self._table),
            time.monotonic() - started,
        )
        self._on_change()  # waiters that met the build read the store now

    def close(self) -> None:
        """Stop watching; the index is written to its snapshot first (a
        build stopped midway writes none)."""
        self._stop.set()
        if self._builder is not None:
            self._builder.join()
        if self._reconciler.is_alive():
            self._reconciler.join()
        if self._built.is_set():
            self.save()
        with self._lock:
            self._stop_observer()

    def save(self) -> None:
        """Write the index's snapshot, unless it holds this index already.

        Called on close and now and then by the reconciler; a failure is
        logged, never raised (the next start reads every file instead).
        """
        with self._lock:
            identity = self._jobs_identity
            if self._jobs_watch is None or identity is None:
                return
            # Taken before the pending events are: a file changed after it
            # is read again at start (fssnapshot.RACY_NS).
            taken_ns = time.time_ns()
            self._take_pending()
            head = self._table.head
            if head == self._saved_head:
                return
            rows = self._table.columns()
        try:
            fssnapshot.write(self.snapshot_path, identity, taken_ns, rows)
        except OSError as exc:
            logger.warning(
                "could not write the index snapshot %s: %s",
                self.snapshot_path,
                exc.strerror,
            )
            return
        with self._lock:
            if self._saved_head is None or head > self._saved_head:
                self._saved_head = head

    # -- queries and writes -------------------------------------------------

    def reconcile(self) -> None:
        """One round of what the reconciler thread does every interval.

        Announces a head that moved since the last round: changes that no
        event announced (an overflow, a dead observer restarted by a query)
        then wake waiters within one interval. Those an event announced are
        announced again; a spare wake-up costs one read.
        """
        with self._lock:
            self._follow_links()
            self._refresh()
            if self._jobs_watch is not None:
                self._rescan()
            head = self._table.head
            moved = head != self._announced
            self._announced = head
        if moved:
            self._on_change()

    def window(self, cutoff: float) -> Window:
        with self._lock:
            self._refresh()
            return self._table.window(cutoff)

    def page(self, query: Query) -> list[Row]:
        with self._lock:
            self._refresh()
            return self._table.page(query)

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        with self._lock:
            self._refresh()
            return self._table.counts(statuses, cutoff)

    def head(self) -> int:
        with self._lock:
            self._refresh()
            return self._table.head

    def __len__(self) -> int:
        return len(self._table)

    @property
    def generation(self) -> int:
        """``JobTable.generation``: read without the lock (an int)."""
        return self._table.generation

    def head_now(self) -> int:
        """The head as the index holds it, without taking in pending events."""
        with self._lock:
            return self._table.head

    def stale(self, query: Stale) -> list[Row]:
        with self._lock:
            self._refresh()
            return self._table.stale(query)

    def bury(self, job_ids: Iterable[str], position: int) -> None:
        """Jobs expired through the store: out of the index at once (their
        files' events come later and find nothing to do)."""
        with self._lock:
            self._table.bury(job_ids, position)

    def reach(self, position: int) -> None:
        with self._lock:
            self._table.reach(position)

    def observe(self, job_id: str, found: jobfiles.JobFile) -> int:
        """A job file read or written through the store: indexed at once
        (read-your-writes); returns its position."""
        with self._lock:
            if self._jobs_watch is None:
                # The directory was just created by this write: the next
                # query watches and scans it.
                self._recheck_dir = True
            return self._table.observe(job_id, found)

    def recheck(self) -> None:
        """The jobs directory may be another one now: the next query watches
        and scans whatever is there."""
        with self._lock:
            self._recheck_dir = True

    # -- internals (called with self._lock held, unless said otherwise) -----

    def _lost(self) -> None:
        # Dispatcher thread: events were lost, so the next query rescans.
        self._recheck_dir = True
        self._on_change()

    def _saw(self, path: str) -> None:
        # Dispatcher thread; never takes self._lock, so it never waits on a read.
        parent, name = os.path.split(path)
        if parent == self._watched_jobs:
            job_id = jobfiles.job_id_of(name)
            if job_id is None:
                return  # a temporary file, or not a job's
            with self._pending_lock:
                self._pending.add(job_id)
        elif path == self._watched_jobs or (
            parent == self._watched_root and name == "jobs"
        ):
            self._recheck_dir = True
        else:
            return
        # Recorded first: whoever the call wakes reads the change.
        self._on_change()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now >= self._paths_due:
            self._paths_due = now + PATHS_CHECK_SECONDS
            self._follow_links()
        observer = self._observer
        if observer is None or not observer.is_alive():
            logger.warning("file observer stopped; restarting it and rescanning")
            self._stop_observer()
            self._start_observer()
            self._recheck_dir = True
        if self._recheck_dir or (
            self._jobs_watch is not None and not os.path.isdir(self.jobs_dir)
        ):
            self._sync_jobs_dir()
        self._take_pending()

    def _take_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, set()
        for job_id in pending:
            self._table.reread(job_id)

    def _sync_jobs_dir(
        self, *, from_snapshot: bool = False, stop: threading.Event | None = None
    ) -> None:
        """Watch the jobs directory if it is there, and rebuild from a scan
        (at start, taking the files the snapshot holds as they are)."""
        now = time.monotonic()
        if now < self._watch_retry_at:
            raise IndexUnavailable("the jobs directory is not watched yet")
        self._recheck_dir = False
        observer = self._observer
        assert observer is not None
        if self._jobs_watch is not None:
            _unschedule(observer, self._jobs_watch)
            self._jobs_watch = self._watched_jobs = None
        self._jobs_identity = None
        self._table.clear()
        target = os.path.realpath(self.jobs_dir)
        if not os.path.isdir(target):
            return
        # Watch first, then scan: a change during the scan is read again later.
        self._watched_jobs = target
        try:
            self._jobs_watch = observer.schedule(
                _Recorder(self), target, event_filter=EVENTS
            )
        except OSError as exc:
            self._watched_jobs = None
            # The inotify watch limit, most often: answered from scans (the
            # store's fallback) until a watch succeeds, tried every few
            # seconds, said once.
            self._recheck_dir = True
            self._watch_retry_at = now + WATCH_RETRY_SECONDS
            if not self._unwatched:
                self._unwatched = True
                logger.warning(
                    "cannot watch the jobs directory (%s); listings scan until it can",
                    exc,
                )
            raise IndexUnavailable(str(exc)) from None
        if self._unwatched:
            self._unwatched = False
            logger.warning("watching the jobs directory again")
        try:
            self._jobs_identity = fssnapshot.identity_of(target)
        except OSError:
            self._recheck_dir = True  # gone since: the next query looks again
            return
        known = None
        if from_snapshot:
            known = fssnapshot.load(self.snapshot_path, self._jobs_identity)
        if not self._table.rescan(full=True, known=known, stop=stop):
            self._recheck_dir = True
        if known is not None:
            taken = self._table.taken_from_snapshot
            logger.info(
                "index snapshot: %d job files taken from it, %d read",
                taken,
                len(self._table) - taken,
            )
            # Every file as the snapshot holds it: no need to write it again.
            if taken == len(known) == len(self._table):
                self._saved_head = self._table.head

    def _follow_links(self) -> None:
        """Watch where the root and the jobs directory lead now: elsewhere (a
        link pointed at another directory), or to another directory at the
        same path (one renamed into the place of the watched one)."""
        root = os.path.realpath(self.root)
        identity = _identity(root)
        # A root that is gone is not watched anew (no observer can watch
        # it): its jobs directory is gone too, looked at below; one made
        # again has an identity of its own.
        if root != self._watched_root or identity not in (None, self._root_identity):
            logger.info("the store's root is another directory now; watching it")
            self._stop_observer()
            self._start_observer()
            self._recheck_dir = True
        target = os.path.realpath(self.jobs_dir)
        if (target if os.path.isdir(target) else None) != self._watched_jobs or (
            self._watched_jobs is not None and _identity(target) != self._jobs_identity
        ):
            self._recheck_dir = True

    def _rescan(self) -> None:
        """Read again what differs from the directory."""
        if not self._table.rescan(full=False):
            self._recheck_dir = True

    def _start_observer(self) -> None:
        observer = self._observer_factory()
        observer.name = "jobstatus-observer"
        # The root is watched for the jobs directory appearing or vanishing.
        self._watched_root = os.path.realpath(self.root)
        self._root_identity = _identity(self._watched_root)
        observer.schedule(_Recorder(self), self._watched_root, event_filter=EVENTS)
        observer.start()
        self._observer = observer

    def _stop_observer(self) -> None:
        observer, self._observer, self._jobs_watch = self._observer, None, None
        self._watched_jobs = None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join()

    def _reconcile_loop(self) -> None:
        # Not holding the lock between rounds: queries go on meanwhile.
        saved_at = time.monotonic()
        while not self._stop.wait(self.reconcile_interval):
            try:
                self.reconcile()
            except IndexUnavailable:
                pass  # said when it began; queries scan meanwhile
            except Exception:
                logger.exception("reconciling the job index failed; will retry")
            if time.monotonic() - saved_at >= SNAPSHOT_INTERVAL_SECONDS:
                saved_at = time.monotonic()
                self.save()


def _unschedule(observer: BaseObserver, watch: ObservedWatch) -> None:
    with contextlib.suppress(KeyError):  # already gone with its directory
        observer.unschedule(watch)


def _identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the directory at ``path``; None if none."""
    try:
        return fssnapshot.identity_of(path)
    except OSError:
        return None
