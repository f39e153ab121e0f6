"""Retention on the file store, declared ``Expiring``: only when its URL says
``?expire=delete``, since it deletes the Toolkit's own files.

An expired job's file is deleted; its tombstone goes to a SQLite file beside
``jobs/`` (``tombstonefile``), shared by every process serving the directory.
Other processes' indexes see the file go (an event, or the next scan) and
their marks take in the tombstones' head. docs/stores.md: the file store's
retention.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from jobstatus_core import ConfigError, Mark, Row, Stale, Tombstone
from jobstatus_core.errors import one_line_reason
from jobstatus_core.rows import Query

from . import jobfiles
from .filesystem import FileStore, WatchedFileStore
from .tombstonefile import TombstoneFile

#: Beside ``jobs/``, with the lock file, never in it.
TOMBSTONES_PATH = os.path.join(".jobstatus", "tombstones.sqlite3")


class ExpiringFileStore(FileStore):
    """The file store that expires jobs by deleting their files
    (``FileStore.open(root, expire="delete")``); takes ``FileStore``'s
    arguments. With ``index=False`` ``stale`` scans the directory, as every
    query of a scanning store does."""

    def __init__(self, root: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(root, **options)
        path = os.path.join(self.root, TOMBSTONES_PATH)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._graves = TombstoneFile(path)
        except (OSError, ConfigError) as exc:
            super().close()
            reason = str(exc) if isinstance(exc, ConfigError) else one_line_reason(exc)
            raise ConfigError(
                f"file store: expire=delete needs a writable {path!r}: {reason}"
            ) from None

    def mark(self) -> Mark:
        # Another process's expiries: their files' deletions moved this
        # index's head by one each, their tombstones took later positions.
        self._refuse_inline()  # the tombstone file is read with waits
        buried = self._graves.head()
        if buried:
            self._query(lambda jobs: jobs.reach(buried))
        return super().mark()

    def stale(self, query: Stale) -> list[Row]:
        return self._query(lambda jobs: jobs.stale(query))

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        self._require_built()
        expired_at = float(at)
        graves: list[tuple[str, str, int]] = []
        asides: list[tuple[str, str]] = []
        with self._exclusive("expired jobs"):
            for row in rows:
                if row.status is None:
                    continue  # never stale
                aside = jobfiles.set_aside(
                    self.jobs_dir,
                    row.job_id,
                    row.version,
                    row.updated_at,
                    self.max_file_size,
                )
                if aside is None:
                    continue
                # The move's ctime: the kernel's clock, as every other
                # change's position on this store.
                moved = os.lstat(aside).st_ctime_ns
                graves.append((row.job_id, row.status, moved))
                asides.append((row.job_id, aside))
            if not graves:
                return []
            try:
                head = self._query(lambda jobs: jobs.head_now())
                tombs = self._graves.bury(graves, at=expired_at, after=head)
            except BaseException:
                for job_id, aside in asides:
                    jobfiles.put_back(aside, self.jobs_dir, job_id)
                raise
            for _, aside in asides:
                jobfiles.remove_aside(aside)
            ids = [job_id for job_id, _ in asides]
            self._query(lambda jobs: jobs.bury(ids, tombs[-1].position))
        self._changed()
        return tombs

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        self._refuse_inline()
        found = self._graves.of(list(job_ids))
        return {tomb.job_id: tomb for tomb in self._dead(list(found.values()))}

    def buried(self, query: Query) -> list[Tombstone]:
        self._refuse_inline()
        found: list[Tombstone] = []
        after = query.after
        while len(found) < query.limit:
            batch = self._graves.after(
                replace(query, after=after, limit=query.limit - len(found))
            )
            if not batch:
                break
            found.extend(self._dead(batch))
            after = batch[-1].position
        return found

    def forget(self, *, before: float, limit: int) -> int:
        return self._graves.forget(before=before, limit=limit)

    def close(self) -> None:
        super().close()
        self._graves.close()

    def _write(self, job_id: str, record: Mapping[str, Any], at: float | None) -> str:
        version = super()._write(job_id, record, at)
        self._graves.drop([job_id])  # alive again
        return version

    def _dead(self, tombs: list[Tombstone]) -> list[Tombstone]:
        """Those of ``tombs`` whose job has no file; the others' jobs were
        written again by another writer (the Toolkit), and are alive: their
        tombstones are dropped."""
        alive = [tomb for tomb in tombs if self._has_file(tomb.job_id)]
        if alive:
            self._graves.drop_exactly(alive)
        return [tomb for tomb in tombs if tomb not in alive]

    def _has_file(self, job_id: str) -> bool:
        try:
            info = os.lstat(os.path.join(self.jobs_dir, job_id + jobfiles.SUFFIX))
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode)


class ExpiringWatchedFileStore(ExpiringFileStore, WatchedFileStore):
    """``WatchedFileStore`` that expires jobs: ``stale`` comes from the index,
    and subscribers hear of each expiry."""
