"""The Toolkit's job files: ``<root>/jobs/<job_id>.json``, read and written safely.

Only names of the form ``<valid job id>.json`` are job files: temp files (which
start with ``.``), other names, directories and symlinks are never read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from jobstatus_core import (
    InvalidRecord,
    Record,
    StoreError,
    WouldBlock,
    is_valid_job_id,
)
from jobstatus_core.validation import JOB_ID_PATTERN

SUFFIX = ".json"
#: Larger job files are skipped by their size, unread. A Toolkit record is a
#: few KB; a 3 GB file (sparse, say) would otherwise be read whole.
DEFAULT_MAX_FILE_SIZE = 4 << 20
# A writer that rewrites a file in place (as the Toolkit does) is usually done
# within milliseconds: for one request, a half-written file is read again
# after these waits (150 ms in all) before it counts as unreadable.
RETRY_DELAYS_SECONDS = (0.01, 0.02, 0.04, 0.08)

logger = logging.getLogger("jobstatus.filesystem")


class UnreadableRecord(StoreError):
    """A job file that is not a job record, even when read again;
    ``fingerprint``: the file as it was the last time it failed; ``final``:
    reading it again cannot help until it changes (too large)."""

    def __init__(self, reason: str, fingerprint: Fingerprint, final: bool) -> None:
        super().__init__(reason)
        self.fingerprint = fingerprint
        self.final = final


class Fingerprint(NamedTuple):
    """What moves when a file changes (ctime moves on chmod and utime too)."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def fingerprint_of(info: os.stat_result) -> Fingerprint:
    """The file's fingerprint, each number within 64 bits (kept packed): a
    time set past 2262 wraps around, which only an equal file 584 years
    apart could match."""
    return Fingerprint(
        info.st_ino,
        info.st_size,
        _int64(info.st_mtime_ns),
        _int64(info.st_ctime_ns),
    )


def _int64(n: int) -> int:
    return (n + 2**63) % 2**64 - 2**63


class BadFile(Exception):
    """A job file that is there but is not a job record now.

    ``reason`` is one line without a path; ``fingerprint`` is the file as it
    was when it failed; ``final`` says that reading it again cannot help until
    it changes (too large).
    """

    def __init__(
        self, reason: str, fingerprint: Fingerprint, *, final: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fingerprint = fingerprint
        self.final = final


class JobFile(NamedTuple):
    """A job file as one ``fstat`` and one read saw it."""

    record: Record
    mtime: float
    #: The job's version (its ETag): see ``version_of``.
    version: str
    #: When the file last changed, by the kernel's clock: where the index
    #: places the change in the store's order.
    ctime_ns: int
    fingerprint: Fingerprint


def version_of(info: os.stat_result, data: bytes) -> str:
    """The version of a job file, the same in every process that reads it.

    The inode and ctime move with every write through the store (a new file
    renamed into place; a kernel clock no writer can set) and with most
    others; the digest of the bytes makes a version that repeats (an inode
    reused within one clock tick) name the same record, so a ``swap`` at it
    loses nothing.
    """
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return f"{info.st_ino:x}-{info.st_ctime_ns:x}-{digest}"


# A job file's name, matched in one call: a start matches a million.
_JOB_FILE = re.compile(f"({JOB_ID_PATTERN.pattern}){re.escape(SUFFIX)}")


def job_id_of(name: str) -> str | None:
    """The job id a directory entry holds, or None when it is not a job file."""
    found = _JOB_FILE.fullmatch(name)
    return None if found is None else found[1]


def too_large(job_id: str, max_size: int) -> str:
    return f"the file of job {job_id} is larger than {max_size} bytes"


class NoWaitUnsupported(WouldBlock):
    """The file system cannot read without waiting (``RWF_NOWAIT``)."""


def read_once(
    jobs_dir: str,
    job_id: str,
    max_size: int = DEFAULT_MAX_FILE_SIZE,
    *,
    nowait: bool = False,
) -> JobFile | None:
    """The record and its mtime, from one read; None when there is no such
    regular file. Never waits: listings and the index read this way.

    Raises ``BadFile`` when the file is larger than ``max_size`` (unread) or
    is not a JSON object, and ``OSError`` when it cannot be read. ``nowait``:
    the bytes are read only from the page cache, else ``WouldBlock``
    (``NoWaitUnsupported`` where the file system cannot tell).
    """
    if not is_valid_job_id(job_id):
        return None
    try:
        # O_NOFOLLOW: a symlink named like a job file is not followed out of
        # the jobs directory. O_NONBLOCK: a FIFO cannot hang the reader.
        fd = os.open(
            os.path.join(jobs_dir, job_id + SUFFIX),
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
        )
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        fingerprint = fingerprint_of(info)
        if info.st_size > max_size:
            raise BadFile(too_large(job_id, max_size), fingerprint, final=True)
        data: bytes | None
        if nowait:
            data = _read_cached(fd, info.st_size)
        else:
            data = _read_to_end(fd, info.st_size, max_size)
        if data is None:
            raise BadFile(too_large(job_id, max_size), fingerprint, final=True)
    finally:
        os.close(fd)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise BadFile(f"the file of job {job_id} is not a JSON object", fingerprint)
    return JobFile(
        value, info.st_mtime, version_of(info, data), info.st_ctime_ns, fingerprint
    )


def current_fingerprint(jobs_dir: str, job_id: str) -> tuple[int, int, int, int] | None:
    """``(inode, size, mtime_ns, ctime_ns)`` of a valid job id's file as it
    is now, or None when it cannot be opened.

    Opened, not ``lstat``'ed: opening is what makes a network file system
    ask its server (NFS's close-to-open consistency), so a file another
    client changed and closed is seen changed, as a read would see it.
    """
    try:
        fd = os.open(
            f"{jobs_dir}/{job_id}{SUFFIX}",
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
        )
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _read_to_end(fd: int, size: int, max_size: int) -> bytes | None:
    """The file's bytes, or None when there are more than ``max_size``."""
    # One read of the size fstat saw, plus a byte: a regular file reads short
    # only at its end, so this is usually the only read. (Each syscall hands
    # the GIL to the event loop and back.)
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data
    # It grew or shrank since, or the read was cut short (Linux reads at most
    # 0x7ffff000 bytes per call): read on to the end, never past the limit.
    chunks, total = [data], len(data)
    while total <= max_size:
        chunk = os.read(fd, min(max(size + 1 - total, 1 << 16), max_size + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return None if total > max_size else b"".join(chunks)


def _read_cached(fd: int, size: int) -> bytes:
    """The file's ``size`` bytes from the page cache, or ``WouldBlock``."""
    if sys.platform != "linux":
        raise NoWaitUnsupported("no RWF_NOWAIT on this platform")
    buffer = bytearray(size + 1)
    try:
        got = os.preadv(fd, [buffer], 0, os.RWF_NOWAIT)
    except BlockingIOError:
        raise WouldBlock("the job file is not in the page cache") from None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            raise NoWaitUnsupported(exc.strerror or "RWF_NOWAIT") from None
        raise
    if got != size:
        # Partly cached, or it grew or shrank since fstat: the ordinary read
        # (on a thread) reads on to the end with every check.
        raise WouldBlock("the job file read short without waiting")
    return bytes(memoryview(buffer)[:got])


def read_job(
    jobs_dir: str,
    job_id: str,
    max_size: int = DEFAULT_MAX_FILE_SIZE,
    *,
    nowait: bool = False,
    waits: Sequence[float] = RETRY_DELAYS_SECONDS,
) -> JobFile | None:
    """The job file, for one request; None when absent.

    A file that does not parse is taken for one being written, and read again
    after each of ``waits``. Raises ``UnreadableRecord`` when it never parses
    or is too large. Sleeps: never call it holding a lock others wait on.
    ``nowait``: see ``read_once``; a file that does not parse raises
    ``WouldBlock`` instead of waiting to read it again.
    """
    delays = iter(waits)
    while True:
        try:
            found = read_once(jobs_dir, job_id, max_size, nowait=nowait)
        except PermissionError:
            # Owned by another user, mode 0600: one line, without the path
            # (the OSError's would be logged with a traceback).
            raise StoreError(
                f"the file of job {job_id} cannot be read: permission denied"
            ) from None
        except BadFile as exc:
            if nowait and not exc.final:
                raise WouldBlock("the job file may be being written") from None
            delay = None if exc.final else next(delays, None)
            if delay is None:
                raise UnreadableRecord(exc.reason, exc.fingerprint, exc.final) from None
            time.sleep(delay)
            continue
        return found


class ListingReads:
    """Job files read for listings (by the index, or by a scan): once each,
    never waiting, and leaving out what is not a job record now.

    A file that failed is remembered by its fingerprint, and neither read nor
    logged again until it changes: a file that stays broken costs a ``stat``
    per reconcile round, not a read and a log line. Thread-safe.
    """

    def __init__(self, jobs_dir: str, max_size: int = DEFAULT_MAX_FILE_SIZE) -> None:
        self.jobs_dir = jobs_dir
        self.max_size = max_size
        self._lock = threading.Lock()
        self._failed: dict[str, Fingerprint] = {}

    def read(self, job_id: str, seen: os.stat_result | None = None) -> JobFile | None:
        """The job file now; None when it is absent or not a job record.

        ``seen`` is the file's ``lstat`` from a directory listing: a file it
        shows unchanged since it failed is not read again, and one it shows
        too large is skipped unopened. Without it (an event said the file was
        written) the file is read: a same-size rewrite within one clock tick
        leaves the fingerprint as it was.
        """
        fingerprint = None
        if seen is not None:
            fingerprint = fingerprint_of(seen)
            if self._failed.get(job_id) == fingerprint:
                return None  # as it was when it failed
            if seen.st_size > self.max_size:
                self._failed_now(job_id, too_large(job_id, self.max_size), fingerprint)
                return None
        try:
            found = read_once(self.jobs_dir, job_id, self.max_size)
        except BadFile as exc:
            self._failed_now(job_id, exc.reason, exc.fingerprint)
            return None
        except OSError as exc:
            reason = f"the file of job {job_id}: {exc.strerror}"
            self._failed_now(job_id, reason, fingerprint)
            return None
        if job_id in self._failed:
            with self._lock:
                self._failed.pop(job_id, None)
        return found

    def keep_only(self, job_ids: Iterable[str]) -> None:
        """Forget the failures of files that are gone."""
        if not self._failed:
            return
        present = set(job_ids)
        with self._lock:
            for job_id in [j for j in self._failed if j not in present]:
                del self._failed[job_id]

    def _failed_now(
        self, job_id: str, reason: str, fingerprint: Fingerprint | None
    ) -> None:
        # A failure whose file state is unknown cannot be told apart from the
        # file's next change: it is logged, not remembered.
        with self._lock:
            if fingerprint is not None:
                if self._failed.get(job_id) == fingerprint:
                    return  # logged already
                self._failed[job_id] = fingerprint
        logger.warning("skipping job file: %s", reason)


def scan(jobs_dir: str) -> Iterator[tuple[str, os.stat_result]]:
    """``(job_id, lstat)`` of every job file, from one directory listing."""
    match = _JOB_FILE.fullmatch
    with os.scandir(jobs_dir) as entries:
        for entry in entries:
            found = match(entry.name)
            if found is None:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since it was listed
                continue
            yield found[1], info


def status_of(record: Record) -> tuple[Any, bool]:
    """``(job_status, has_status)``: records without one are left out of listings."""
    if "job_status" not in record:
        return None, False
    return record["job_status"], True


def write_job(
    jobs_dir: str,
    record: Mapping[str, Any],
    job_id: str,
    at: float | None,
    *,
    durable: bool = True,
    max_size: int = DEFAULT_MAX_FILE_SIZE,
) -> JobFile:
    """Write a whole record atomically; returns the file as written.

    The record goes to a temp file in the same directory and is renamed over
    the job file: a reader sees the old record or the new one, never half of
    either. ``durable``: the temp file is flushed to disk (``fsync``) before
    the rename, so that after a power loss the job file holds a whole record
    — the old one or the new one — on every file system. Without it a write
    costs about a third (no wait for the disk), and a power loss (not a
    process crash) may leave a file written in the last seconds empty on
    file systems that do not order the data before the rename (ext4 does,
    for a file renamed over another). The file is stat'ed through its
    descriptor after the rename (which moves its ctime), so the version
    returned is the one readers see, whoever renames over it next.

    A record of more than ``max_size`` bytes is refused (``InvalidRecord``),
    before anything is written: readers skip such a file, and a job whose
    file no reader takes could never be changed again.
    """
    data = json.dumps(record, allow_nan=False).encode("utf-8")
    if len(data) > max_size:
        raise InvalidRecord(
            f"job {job_id}: the record is {len(data)} bytes, more than the file"
            f" store holds ({max_size} bytes, max_file_size)"
        )
    # Named before it exists, so that the cleanup below covers an interrupt
    # (Ctrl-C) arriving at any point once the file may have been created.
    temp = os.path.join(jobs_dir, f".{secrets.token_hex(8)}.tmp")
    try:
        fd = _create(jobs_dir, temp)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if at is not None:
                os.utime(fd, (at, at))
            if durable:
                os.fsync(fd)
            os.replace(temp, os.path.join(jobs_dir, job_id + SUFFIX))
            info = os.fstat(fd)
        finally:
            os.close(fd)
    except FileExistsError:
        raise  # the name was taken (64 random bits: never in practice)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return JobFile(
        dict(record),
        info.st_mtime,
        version_of(info, data),
        info.st_ctime_ns,
        fingerprint_of(info),
    )


def _create(jobs_dir: str, temp: str) -> int:
    """Create the new file ``temp`` for writing, and ``jobs_dir`` if missing.

    Its mode is the Toolkit's own files' (Python's ``open``: 0666 less the
    umask): a server running as another user than the workers reads what
    they write, and a Toolkit file rewritten keeps the mode its kind has.
    A deployment that keeps records private sets the umask (systemd's
    ``UMask=0077``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(temp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(jobs_dir, exist_ok=True)
        return os.open(temp, flags, 0o666)


def _rename_aside(path: str, aside: str) -> None:
    # Its own function: tests inject a Toolkit write at this step.
    os.rename(path, aside)


def set_aside(
    jobs_dir: str, job_id: str, version: str, mtime: float, max_size: int
) -> str | None:
    """Move the job's file out of its name if it is still at ``version``
    (retention); returns where it went, for ``bury``, or None when the job
    changed or is gone (left as it is).

    The file is renamed to a temp name in the same directory (never another
    file system; a name no job has), then checked again: a writer that
    replaced it (temp file and rename) just before the move, or rewrote it in
    place through a descriptor opened before it, changed its inode, mtime or
    bytes, and the file is put back. A file written at the job's name after
    the move is newer: it stays, and the moved one is removed.
    """
    parts = version.split("-")
    if not is_valid_job_id(job_id) or len(parts) != 3:
        return None  # never a name outside jobs/, nor a version of ours
    inode, ctime, digest = parts
    path = os.path.join(jobs_dir, job_id + SUFFIX)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    # The inode and ctime move with any change: a cheap check first, so that
    # a job changed since it was found stale is not even moved.
    if (f"{info.st_ino:x}", f"{info.st_ctime_ns:x}") != (inode, ctime):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    aside = os.path.join(jobs_dir, f".{os.urandom(8).hex()}.expiring")
    try:
        _rename_aside(path, aside)
    except FileNotFoundError:
        return None
    try:
        moved = _read_aside(aside, max_size)
    except OSError:
        moved = None
    if moved is not None:
        moved_info, data = moved
        if (
            f"{moved_info.st_ino:x}" == inode
            and moved_info.st_mtime == mtime
            and hashlib.blake2b(data, digest_size=8).hexdigest() == digest
        ):
            return aside
    put_back(aside, jobs_dir, job_id)
    return None


def remove_aside(aside: str) -> None:
    """Remove a file ``set_aside`` moved, once its tombstone is left."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)


def _read_aside(aside: str, max_size: int) -> tuple[os.stat_result, bytes] | None:
    fd = os.open(aside, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        data = _read_to_end(fd, info.st_size, max_size)
    finally:
        os.close(fd)
    return None if data is None else (info, data)


def put_back(aside: str, jobs_dir: str, job_id: str) -> None:
    """Return a file ``set_aside`` moved to the job's name, unless a newer
    file is there now (a link never replaces one)."""
    with contextlib.suppress(FileExistsError):
        os.link(aside, os.path.join(jobs_dir, job_id + SUFFIX))
    os.unlink(aside)
