"""The file index persisted: ``<root>/.jobstatus/index.snapshot``.

A snapshot holds, for each job file the index had taken in, the file's
fingerprint when it was read (inode, size, mtime and ctime in ns) and what
the index keeps of it (mtime, version, status text). It is never trusted on
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
from collections.abc import Sequence
from typing import NamedTuple

from . import jobfiles
from .jobfiles import Fingerprint

logger = logging.getLogger("jobstatus.filesystem")

#: Beside ``jobs/``, never in it: ``jobs/`` is the Toolkit's.
SNAPSHOT_PATH = os.path.join(".jobstatus", "index.snapshot")
MAGIC = b"jobstatus file index\n"
FORMAT = 1
_PREFIX = struct.Struct("<IQ")
_DIGEST_SIZE = 32
#: A file whose ctime is this close to the snapshot's time (or later) is read
#: again at start: within one tick of the kernel's coarse clock a rewrite of
#: the same size leaves its fingerprint as it was, and its event may not have
#: reached the index yet when the snapshot was taken (watchdog holds events
#: about 0.5 s). The same rule as git's "racily clean" index entries.
RACY_NS = 5_000_000_000


class Entry(NamedTuple):
    """One job file as the index took it in."""

    job_id: str
    fingerprint: Fingerprint
    mtime: float
    version: str
    #: ``job_status`` as JSON text; None when the record has none.
    status: str | None


class Snapshot:
    """A snapshot as loaded: entries by job id, matched against ``lstat``s."""

    def __init__(self, entries: dict[str, Entry], taken_ns: int) -> None:
        self.entries = entries
        self.trusted_before_ns = taken_ns - RACY_NS

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, job_id: str, info: os.stat_result) -> Entry | None:
        """The entry, when the file is the one it was taken from."""
        entry = self.entries.get(job_id)
        if entry is None:
            return None
        seen = entry.fingerprint
        if (
            seen != jobfiles.fingerprint_of(info)
            or seen.ctime_ns >= self.trusted_before_ns
        ):
            return None
        return entry


def identity_of(jobs_dir: str) -> tuple[int, int]:
    """The jobs directory itself (device, inode): a snapshot names it."""
    info = os.stat(jobs_dir)
    return info.st_dev, info.st_ino


def write(
    path: str, identity: tuple[int, int], taken_ns: int, entries: Sequence[Entry]
) -> None:
    """Write ``entries`` atomically at ``path``; raises ``OSError``."""
    texts: dict[str | None, int] = {None: -1}
    for entry in entries:
        if entry.status not in texts:
            texts[entry.status] = len(texts) - 1
    statuses = [text for text in texts if text is not None]
    columns = [
        "\n".join(entry.job_id for entry in entries).encode("ascii"),
        "\n".join(entry.version for entry in entries).encode("ascii"),
        array("i", [texts[entry.status] for entry in entries]).tobytes(),
        array("Q", [entry.fingerprint.inode for entry in entries]).tobytes(),
        array("q", [entry.fingerprint.size for entry in entries]).tobytes(),
        array("q", [entry.fingerprint.mtime_ns for entry in entries]).tobytes(),
        array("q", [entry.fingerprint.ctime_ns for entry in entries]).tobytes(),
        array("d", [entry.mtime for entry in entries]).tobytes(),
    ]
    header = json.dumps(
        {
            "byteorder": sys.byteorder,
            "device": identity[0],
            "inode": identity[1],
            "taken_ns": taken_ns,
            "count": len(entries),
            "statuses": statuses,
            "columns": [len(column) for column in columns],
        }
    ).encode("ascii")
    digest = hashlib.blake2b(digest_size=_DIGEST_SIZE)
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
    if len(data) < start + _DIGEST_SIZE or not data.startswith(MAGIC):
        raise Unusable("not a snapshot, or truncated")
    body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
    form, header_size = _PREFIX.unpack_from(data, len(MAGIC))
    if form != FORMAT:
        raise Unusable(f"format {form}, not {FORMAT}")
    if hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest() != digest:
        raise Unusable("its digest does not match: truncated or torn")
    try:
        header = json.loads(body[start : start + header_size])
        if header["byteorder"] != sys.byteorder:
            raise Unusable("written on a machine of another byte order")
        if (header["device"], header["inode"]) != identity:
            raise Unusable("it is of another jobs directory")
        count: int = header["count"]
        statuses: list[str | None] = [*header["statuses"], None]
        offset = start + header_size
        columns = []
        for size in header["columns"]:
            columns.append(body[offset : offset + size])
            offset += size
        ids_text, versions_text, *numbers = columns
        ids = ids_text.decode("ascii").split("\n") if count else []
        versions = versions_text.decode("ascii").split("\n") if count else []
        kinds = ("i", "Q", "q", "q", "q", "d")
        status_of, inodes, sizes, mtimes_ns, ctimes_ns, mtimes = (
            array(kind, column) for kind, column in zip(kinds, numbers, strict=True)
        )
        if offset != len(body) or not all(
            len(column) == count
            for column in (
                ids,
                versions,
                status_of,
                inodes,
                sizes,
                mtimes_ns,
                ctimes_ns,
                mtimes,
            )
        ):
            raise Unusable("its columns do not match its header")
        fingerprints = map(
            Fingerprint._make,
            zip(inodes, sizes, mtimes_ns, ctimes_ns, strict=True),
        )
        texts = [statuses[status] for status in status_of]
        entries = dict(
            zip(
                ids,
                map(
                    Entry._make,
                    zip(ids, fingerprints, mtimes, versions, texts, strict=True),
                ),
                strict=True,
            )
        )
        return Snapshot(entries, header["taken_ns"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise Unusable(f"unreadable: {exc}") from None
