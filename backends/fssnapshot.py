"""The file index persisted: ``<root>/.jobstatus/index.snapshot``.

A snapshot holds, for each job file the index had taken in, the file's
fingerprint when it was read (inode, size, mtime and ctime in ns) and what
the index keeps of it (mtime, the version's digest, status code): the
index's own columns (``jobcolumns``), written and loaded whole. It is never trusted on
its own: at start the index lists ``jobs/`` and takes from the snapshot only
the files whose ``lstat`` fingerprint is the one recorded; every other file
is read (docs/stores.md: the index snapshot).

Layout: ``MAGIC``, a little-endian u32 format number and u64 header length,
a JSON header, the columns, and a BLAKE2b digest of all that: a truncated
or torn file (a crash mid-write, two writers) fails the digest and is not
used. Writers write a temp file and rename it into place; the last one wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import sys
import tempfile
from array import array

from .jobcolumns import DIGEST_SIZE, FP_SIZE, NO_STATUS, Columns

logger = logging.getLogger("jobstatus.filesystem")

#: Beside ``jobs/``, never in it: ``jobs/`` is the Toolkit's.
SNAPSHOT_PATH = os.path.join(".jobstatus", "index.snapshot")
MAGIC = b"jobstatus file index\n"
#: 2: the rows as the index holds them (packed fingerprints, version digests,
#: status codes); a snapshot of format 1 is ignored, and rewritten.
FORMAT = 2
_PREFIX = struct.Struct("<IQ")
_CHECKSUM_SIZE = 32
#: A file whose ctime is this close to the snapshot's time (or later) is read
#: again at start: within one tick of the kernel's coarse clock a rewrite of
#: the same size leaves its fingerprint as it was, and its event may not have
#: reached the index yet when the snapshot was taken (watchdog holds events
#: about 0.5 s). The same rule as git's "racily clean" index entries.
RACY_NS = 5_000_000_000


class Snapshot:
    """A snapshot as loaded: rows as columns, matched against ``lstat``s."""

    def __init__(self, columns: Columns, taken_ns: int) -> None:
        self.columns = columns
        self.trusted_before_ns = taken_ns - RACY_NS

    def __len__(self) -> int:
        return len(self.columns.job_ids)


def identity_of(jobs_dir: str) -> tuple[int, int]:
    """The jobs directory itself (device, inode): a snapshot names it."""
    info = os.stat(jobs_dir)
    return info.st_dev, info.st_ino


def unwritable(path: str) -> str | None:
    """Why no snapshot can be written at ``path`` (None: one can), found
    without writing one: a read-only storage directory (a systemd unit's
    ``ProtectSystem=strict``) makes every start read every job file."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None if os.access(directory, os.W_OK) else "not writable"


def write(path: str, identity: tuple[int, int], taken_ns: int, rows: Columns) -> None:
    """Write ``rows`` atomically at ``path``; raises ``OSError``."""
    columns = [
        "\n".join(rows.job_ids).encode("ascii"),
        rows.codes.tobytes(),
        rows.fingerprints,
        rows.digests,
        rows.mtimes.tobytes(),
        b"" if rows.by_time is None else rows.by_time.tobytes(),
    ]
    header = json.dumps(
        {
            "byteorder": sys.byteorder,
            "device": identity[0],
            "inode": identity[1],
            "taken_ns": taken_ns,
            "count": len(rows.job_ids),
            "statuses": rows.statuses,
            "odd_versions": {str(row): v for row, v in rows.odd_versions.items()},
            "columns": [len(column) for column in columns],
        }
    ).encode("ascii")
    digest = hashlib.blake2b(digest_size=_CHECKSUM_SIZE)
    parts = [MAGIC, _PREFIX.pack(FORMAT, len(header)), header, *columns]
    for part in parts:
        digest.update(part)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".index.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            for part in parts:
                file.write(part)
            file.write(digest.digest())
        # No fsync: a file torn by a crash fails its digest and is not used.
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class Unusable(Exception):
    """Why a snapshot is not used; one line."""


def load(path: str, identity: tuple[int, int]) -> Snapshot | None:
    """The snapshot at ``path`` for the jobs directory ``identity``; None
    when there is none, or (with one log line) when it cannot be used."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning(
            "index snapshot not used (%s); reading every job file", exc.strerror
        )
        return None
    try:
        return _parse(data, identity)
    except Unusable as exc:
        logger.warning("index snapshot not used (%s); reading every job file", exc)
        return None


def _parse(data: bytes, identity: tuple[int, int]) -> Snapshot:
    start = len(MAGIC) + _PREFIX.size
    if len(data) < start + _CHECKSUM_SIZE or not data.startswith(MAGIC):
        raise Unusable("not a snapshot, or truncated")
    # A view: the body is most of a file of ~70 MB a million jobs.
    body, digest = memoryview(data)[:-_CHECKSUM_SIZE], data[-_CHECKSUM_SIZE:]
    form, header_size = _PREFIX.unpack_from(data, len(MAGIC))
    if form != FORMAT:
        raise Unusable(f"format {form}, not {FORMAT}")
    if hashlib.blake2b(body, digest_size=_CHECKSUM_SIZE).digest() != digest:
        raise Unusable("its digest does not match: truncated or torn")
    try:
        header = json.loads(bytes(body[start : start + header_size]))
        if header["byteorder"] != sys.byteorder:
            raise Unusable("written on a machine of another byte order")
        if (header["device"], header["inode"]) != identity:
            raise Unusable("it is of another jobs directory")
        count: int = header["count"]
        statuses: list[str] = header["statuses"]
        offset = start + header_size
        parts = []
        for size in header["columns"]:
            parts.append(body[offset : offset + size])
            offset += size
        ids_text, codes_bytes, fingerprints, digests, mtimes_bytes, by_time_bytes = (
            parts
        )
        job_ids = str(ids_text, "ascii").split("\n") if count else []
        codes, mtimes = array("i"), array("d")
        codes.frombytes(codes_bytes)
        mtimes.frombytes(mtimes_bytes)
        order = array("i")
        order.frombytes(by_time_bytes)
        if (
            offset != len(body)
            or not len(job_ids) == len(codes) == len(mtimes) == count
            or len(fingerprints) != count * FP_SIZE
            or len(digests) != count * DIGEST_SIZE
            or not all(NO_STATUS <= code < len(statuses) for code in set(codes))
        ):
            raise Unusable("its columns do not match its header")
        # Not written (an empty column): the start sorts the rows itself.
        by_time = order if len(order) == count else None
        odd = {int(row): str(v) for row, v in header["odd_versions"].items()}
        columns = Columns(
            job_ids,
            codes,
            statuses,
            bytes(fingerprints),
            bytes(digests),
            mtimes,
            odd,
            by_time,
        )
        return Snapshot(columns, header["taken_ns"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise Unusable(f"unreadable: {exc}") from None
