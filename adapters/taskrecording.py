"""What the job-queue adapters share: recording that never fails a task.

A ``TaskRecorder`` records through a ``Recorder`` opened in the process that
records (queue workers fork: an SQLite connection or a file observer must
not cross a fork), retries a store that is down a bounded number of times,
then drops the change with a warning. Order is the Recorder's business: a
change that arrives late or twice is ignored by its rules.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from jobstatus_backends.recorder import Recorder
from jobstatus_core import ConfigError, ForkSafe, Store, StoreError

from .service import OPENED_BEFORE_FORK

log = logging.getLogger("jobstatus.queues")

#: Tries of one change while the store is down, and the pause after each.
TRIES = 3
PAUSE_SECONDS = 0.05
#: How much of a non-JSON return value's repr is kept.
REPR_LIMIT = 2000


def response_of(value: Any) -> Any:
    """A task's return value as a job's ``response``: JSON as it is, anything
    else as ``{"repr": repr(value)[:2000], "type": "<qualified name>"}``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        kind = type(value)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"
        return {"repr": repr(value)[:REPR_LIMIT], "type": name}
    return value


class TaskRecorder:
    """Records job states for a queue adapter; never raises into a task."""

    def __init__(
        self,
        store: Store | str,
        *,
        tries: int = TRIES,
        pause: float = PAUSE_SECONDS,
    ) -> None:
        self.store = store
        self.tries = tries
        self.pause = pause
        self._pid = os.getpid()
        self._recorders: dict[int, Recorder] = {}
        self._lock = threading.Lock()

    def recorder(self) -> Recorder:
        """This process's recorder: a URL is opened once in each process."""
        pid = os.getpid()
        with self._lock:
            found = self._recorders.get(pid)
            if found is None:
                usable = pid == self._pid or isinstance(self.store, str | ForkSafe)
                if not usable:
                    raise ConfigError(OPENED_BEFORE_FORK + " (pass a store URL)")
                found = Recorder(self.store)
                # A forked child's copy of the parent's recorders is the
                # parent's: never close or reuse them here.
                self._recorders = {pid: found}
            return found

    def record(self, job_id: str, change: Callable[[Recorder], bool]) -> bool:
        """Apply ``change`` for ``job_id``; False when it was out of order or
        the store stayed down (logged), never an exception."""
        for attempt in range(1, self.tries + 1):
            try:
                return change(self.recorder())
            except StoreError as exc:
                if attempt == self.tries:
                    log.warning(
                        "job %s: state not recorded after %d tries: %s",
                        job_id,
                        attempt,
                        exc,
                    )
                    return False
                time.sleep(self.pause * attempt)
            except Exception:
                log.exception("job %s: state not recorded", job_id)
                return False
        return False

    def close(self) -> None:
        """Close what this process opened."""
        with self._lock:
            found = self._recorders.pop(os.getpid(), None)
        if found is not None:
            found.close()
