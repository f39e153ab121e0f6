"""``file:///path``: the Toolkit's own layout, ``<path>/jobs/<job_id>.json``.

"Last written" is the file's mtime. Listing is answered from a watchdog index
(see ``fsindex``) unless the URL says ``?index=off`` or no observer can start;
then every listing scans the directory, as the Toolkit does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from jobstatus_core import ConfigError, Record, StoreError, checked_job_id, jsontext
from jobstatus_core.errors import one_line_reason
from jobstatus_core.window import in_window

from . import jobfiles
from .fsindex import JobIndex, ObserverFactory
from .urloptions import parse_store_url

logger = logging.getLogger("jobstatus.filesystem")

DEFAULT_RECONCILE_SECONDS = 30.0


class FileStore:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        index: bool = True,
        reconcile_interval: float = DEFAULT_RECONCILE_SECONDS,
        max_file_size: int = jobfiles.DEFAULT_MAX_FILE_SIZE,
        observer_factory: ObserverFactory | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise ConfigError(f"file store: {self.root!r} is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise ConfigError(f"file store: {self.root!r} is not readable")
        self.jobs_dir = os.path.join(self.root, "jobs")
        self.max_file_size = max_file_size
        # Listings made by scanning (no index, or the index failed).
        self._scan_reads = jobfiles.ListingReads(self.jobs_dir, max_file_size)
        self.index: JobIndex | None = None
        if index:
            self.index = self._start_index(reconcile_interval, observer_factory)

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        """``file:///abs/path[?index=off][&reconcile=SECONDS][&max_file_size=BYTES]``."""
        parsed = parse_store_url(url)
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise parsed.fail("use file:///absolute/path")
        return cls(
            unquote(parsed.path),
            index=parsed.options.get("index", True),
            reconcile_interval=parsed.options.get(
                "reconcile", DEFAULT_RECONCILE_SECONDS
            ),
            max_file_size=parsed.options.get(
                "max_file_size", jobfiles.DEFAULT_MAX_FILE_SIZE
            ),
        )

    def _start_index(
        self, reconcile_interval: float, observer_factory: ObserverFactory | None
    ) -> JobIndex | None:
        options: dict[str, Any] = {
            "reconcile_interval": reconcile_interval,
            "max_file_size": self.max_file_size,
        }
        if observer_factory is not None:
            options["observer_factory"] = observer_factory
        index = JobIndex(self.root, **options)
        try:
            index.start()
        except Exception as exc:
            # inotify watches exhausted, an unsupported file system, ...
            logger.warning("no file observer (%s); every listing will scan", exc)
            index.close()
            return None
        return index

    def get(self, job_id: str) -> Record | None:
        found = jobfiles.read_job(self.jobs_dir, job_id, self.max_file_size)
        return None if found is None else found[0]

    def changed_since(self, cutoff: float) -> list[tuple[str, Any]]:
        return list(json.loads(self.changed_since_json(cutoff)).items())

    def changed_since_json(self, cutoff: float) -> str:
        if self.index is not None:
            try:
                return self.index.since_json(cutoff)
            except Exception:
                logger.exception("the job index failed; scanning instead")
        return jsontext.encode(dict(self._scan_since(cutoff)))

    def _scan_since(self, cutoff: float) -> list[tuple[str, Any]]:
        """What the Toolkit does: list, stat every file, read the matches."""
        matches: list[tuple[str, Any]] = []
        try:
            listing = list(jobfiles.scan(self.jobs_dir))
        except (FileNotFoundError, NotADirectoryError):
            return matches  # no jobs directory (now): nothing is there
        for job_id, info in listing:
            if in_window(info.st_mtime, cutoff):
                found = self._scan_reads.read(job_id, info)
                if found is None or not in_window(found.mtime, cutoff):
                    continue
                status, has_status = jobfiles.status_of(found.record)
                if has_status:
                    matches.append((job_id, status))
        self._scan_reads.keep_only(job_id for job_id, _ in listing)
        return matches

    def jobs(self) -> list[tuple[str, float]]:
        if not self.exists():
            return []
        return [
            (job_id, info.st_mtime) for job_id, info in jobfiles.scan(self.jobs_dir)
        ]

    def exists(self) -> bool:
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
        try:
            mtime = jobfiles.write_job(self.jobs_dir, record, job_id, at)
        except OSError as exc:
            raise StoreError(
                f"could not write job {job_id}: {one_line_reason(exc)}"
            ) from exc
        if self.index is not None:
            self.index.wrote(job_id, mtime, record["job_status"])

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None
