"""The Toolkit's job files: ``<root>/jobs/<job_id>.json``, read and written safely.

Only names of the form ``<valid job id>.json`` are job files: temp files (which
start with ``.``), other names, directories and symlinks are never read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from jobstatus_core import Record, StoreError, is_valid_job_id

SUFFIX = ".json"
# A writer that rewrites a file in place (as the Toolkit does) is usually done
# within milliseconds: a half-written file is read again after these waits
# (150 ms in all) before it counts as unreadable.
RETRY_DELAYS_SECONDS = (0.01, 0.02, 0.04, 0.08)

logger = logging.getLogger("jobstatus.filesystem")


class UnreadableRecord(StoreError):
    """A job file that did not parse as a JSON object, even on a second read."""


class Unreadable(Exception):
    """A job file that is there but cannot be read now (already logged)."""


def job_id_of(name: str) -> str | None:
    """The job id a directory entry holds, or None when it is not a job file."""
    if not name.endswith(SUFFIX):
        return None
    job_id = name[: -len(SUFFIX)]
    return job_id if is_valid_job_id(job_id) else None


def read_job(jobs_dir: str, job_id: str) -> tuple[Record, float] | None:
    """The record and its mtime; None when there is no such regular file.

    Raises ``UnreadableRecord`` when the file never parses, however often read.
    """
    if not is_valid_job_id(job_id):
        return None
    path = os.path.join(jobs_dir, job_id + SUFFIX)
    for delay in (*RETRY_DELAYS_SECONDS, None):
        loaded = _read_regular_file(path)
        if loaded is None:
            return None
        data, mtime = loaded
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value, mtime
        if delay is not None:
            time.sleep(delay)
    raise UnreadableRecord(f"the file of job {job_id} is not a JSON object")


def _read_regular_file(path: str) -> tuple[bytes, float] | None:
    try:
        # O_NOFOLLOW: a symlink named like a job file is not followed out of
        # the jobs directory. O_NONBLOCK: a FIFO cannot hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        # One read of the size fstat saw, plus a byte: a regular file reads
        # short only at its end, so this is usually the only read. (Each
        # syscall hands the GIL to the event loop and back.)
        data = os.read(fd, info.st_size + 1)
        if len(data) > info.st_size:  # it grew since: read on to its end
            chunks = [data]
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data, info.st_mtime
    finally:
        os.close(fd)


def scan(jobs_dir: str) -> Iterator[tuple[str, float]]:
    """``(job_id, mtime)`` of every job file, from one directory listing."""
    with os.scandir(jobs_dir) as entries:
        for entry in entries:
            job_id = job_id_of(entry.name)
            if job_id is None:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:  # removed since it was listed
                continue
            yield job_id, mtime


def read_status(jobs_dir: str, job_id: str) -> tuple[float, Any, bool] | None:
    """``(mtime, job_status, has_status)`` of a job file; None when absent.

    Raises ``Unreadable`` for a file that cannot be read: listings skip it (one
    bad file never fails a listing), and the index keeps what it knew.
    """
    try:
        found = read_job(jobs_dir, job_id)
    except UnreadableRecord as exc:
        logger.warning("skipping job file: %s", exc)
        raise Unreadable from None
    except OSError as exc:
        logger.warning("skipping job file of %s: %s", job_id, exc.strerror)
        raise Unreadable from None
    if found is None:
        return None
    record, mtime = found
    if "job_status" not in record:
        return mtime, None, False
    return mtime, record["job_status"], True


def write_job(
    jobs_dir: str, record: Mapping[str, Any], job_id: str, at: float | None
) -> float:
    """Write a whole record atomically; returns the file's mtime.

    The record goes to a temp file in the same directory, is flushed to disk,
    and then renamed over the job file: a reader sees the old record or the new
    one, never half of either.
    """
    data = json.dumps(record, allow_nan=False).encode("utf-8")
    os.makedirs(jobs_dir, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=jobs_dir, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if at is not None:
            os.utime(temp, (at, at))
        mtime = os.stat(temp).st_mtime
        os.replace(temp, os.path.join(jobs_dir, job_id + SUFFIX))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return mtime
