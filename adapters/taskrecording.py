"""What the job-queue adapters share: recording that never fails a task, the
response rule, and the job that the current worker thread runs.

A queue adapter turns the queue's events into ``Recorder`` calls through a
``TaskRecorder``. Recording is a side effect of running a task, never a
reason for it to fail: a store that is down is tried a few times, then the
event is dropped with a warning, and the task goes on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jobstatus_backends.recorder import Recorder, message_of
from jobstatus_core import (
    ConfigError,
    ForkSafe,
    InvalidRecord,
    Record,
    Store,
    StoreError,
)
from jobstatus_core.errors import OPENED_BEFORE_FORK
from jobstatus_core.protocol import MAX_RECORD_DEPTH, nests_within
from jobstatus_core.recording import Change
from jobstatus_core.validation import JOB_ID_RULE, is_valid_job_id

log = logging.getLogger("jobstatus.queues")

#: Tries of one event against a store that fails, and the first pause between
#: them (doubled each time): a blip is ridden out, a store that refuses
#: connections costs a task well under a second per event (one that hangs,
#: its timeout a try: ``DOWN_SECONDS``).
TRIES = 3
FIRST_PAUSE = 0.05
#: After a change dropped for the store's failure, how long the changes
#: after it are tried once: a store that hangs (accepts connections, never
#: answers) then costs each event one timeout, not three and the pauses.
DOWN_SECONDS = 5.0
#: The longest ``repr`` kept of a response that is not JSON.
REPR_LIMIT = 2000
#: How many job ids outside the rule a recorder remembers having warned of,
#: so that each such job is one warning, not one per event.
REFUSED_KEPT = 1000


def response_of(value: Any) -> Any:
    """A task's return value as a record's ``response``: JSON a record can
    hold as is; anything else (not JSON, or nested deeper than a record
    takes below its ``response``) as ``{"repr": repr(value)[:2000], "type":
    "<module>.<qualname>"}``, so that the task's end is recorded whatever
    it returned (a ``repr`` that raises gives a stand-in that says why)."""
    try:
        json.dumps(value, allow_nan=False)
        fits = nests_within(value, MAX_RECORD_DEPTH - 1)
    except Exception:
        # TypeError, ValueError (NaN; an int past Python's limit of digits
        # for text), RecursionError, or whatever a value's own code raises.
        fits = False
    if fits:
        return value
    kind = type(value)
    try:
        shown = repr(value)[:REPR_LIMIT]
    except RecursionError:
        shown = f"<{kind.__qualname__} nested too deep to show>"
    except Exception as exc:
        # A __repr__ that raises, an int of more than 4,300 digits: the end
        # is still recorded, with why its value is not shown.
        why = f"<{kind.__qualname__}: repr() failed: {type(exc).__name__}: "
        shown = f"{why}{message_of(exc)}"[: REPR_LIMIT - 1] + ">"
    return {"repr": shown, "type": qualified_name(kind)}


def qualified_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def refused_response(value: Any, why: InvalidRecord) -> dict[str, Any]:
    """The ``response`` recorded instead of one the store refused (larger
    than it holds): the value's type, and a stand-in ``repr`` that says so."""
    shown = f"<response not kept: {message_of(why)}>"
    return {"repr": shown[:REPR_LIMIT], "type": qualified_name(type(value))}


def refused_error(
    error: BaseException | str | Mapping[str, Any], why: InvalidRecord
) -> dict[str, Any]:
    """The ``error`` recorded instead of one the store refused: its type,
    and a stand-in ``message`` that says so."""
    if isinstance(error, BaseException):
        kind: Any = type(error).__name__
    elif isinstance(error, str):
        kind = "Error"
    else:
        kind = error.get("type", "Error")
    shown = f"<message not kept: {message_of(why)}>"
    return {"type": kind, "message": shown[:REPR_LIMIT]}


class TaskRecorder:
    """A ``Recorder`` for queue events: each call returns whether it applied,
    and a failing store is retried, then logged and dropped — never raised.

    A store given as a URL is opened once per process, on first use, so a
    worker that forks after importing the app gets a connection of its own.
    """

    def __init__(
        self,
        store: Store | str,
        *,
        tries: int = TRIES,
        pause: float = FIRST_PAUSE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = store if isinstance(store, str) else None
        self.tries = tries
        self.pause = pause
        self.sleep = sleep
        self.clock = clock
        #: Until when the store is taken for down (``DOWN_SECONDS``).
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._opened: tuple[int, Recorder] | None = None
        self._given = None if isinstance(store, str) else Recorder(store)
        self._pid = os.getpid()
        #: Job ids outside the rule already warned of (oldest first).
        self._refused: dict[str, None] = {}

    @property
    def recorder(self) -> Recorder:
        if self._url is None:
            assert self._given is not None
            if os.getpid() != self._pid and not isinstance(self._given.store, ForkSafe):
                # A worker forked after the store was opened (Celery's
                # prefork pool, RQ's work horse): its connection or observer
                # threads are the parent's.
                raise ConfigError(OPENED_BEFORE_FORK + " (pass a store URL)")
            return self._given
        pid = os.getpid()
        opened = self._opened
        if opened is None or opened[0] != pid:
            with self._lock:
                opened = self._opened
                if opened is not None and opened[0] != pid:
                    # A forked child: a fork-safe store opened by the parent
                    # is kept (its pool reconnects), anything else is opened
                    # again — cheap, its modules and schema checks are done.
                    if isinstance(opened[1].store, ForkSafe):
                        opened = (pid, opened[1])
                    else:
                        opened = None
                if opened is None:
                    opened = (pid, Recorder(self._url))
                self._opened = opened
        return opened[1]

    def open(self) -> None:
        """Open the store now, before a worker forks: each child then starts
        from an opened store (RQ forks a work horse per job)."""
        self.recorder  # noqa: B018 - opens it

    def record(
        self, job_id: str, change: Callable[[Recorder], bool], event: str = "state"
    ) -> bool:
        """Apply ``change`` (a call of the ``Recorder``); whether it applied.
        ``event`` names the state in the warning of a change dropped."""
        return self._record(job_id, event, change)

    def queued(self, job_id: str, attempt: int | None, task: str | None) -> bool:
        return self._record(
            job_id, "queued", lambda r: r.queued(job_id, attempt=attempt, task=task)
        )

    def running(self, job_id: str, attempt: int | None, **fields: Any) -> bool:
        return self._record(
            job_id, "running", lambda r: r.running(job_id, attempt=attempt, **fields)
        )

    def progress(
        self,
        job_id: str,
        attempt: int | None,
        done: float,
        total: float | None,
        message: str | None,
    ) -> bool:
        return self._record(
            job_id,
            "progress",
            lambda r: r.progress(job_id, done, total, message, attempt=attempt),
        )

    def done(self, job_id: str, attempt: int | None, value: Any) -> bool:
        response = response_of(value)
        return self._record(
            job_id,
            "done",
            lambda r: r.done(job_id, response, attempt=attempt),
            lambda r, why: r.done(
                job_id, refused_response(value, why), attempt=attempt
            ),
        )

    def failed(
        self,
        job_id: str,
        attempt: int | None,
        error: BaseException | str | Mapping[str, Any],
    ) -> bool:
        """``error``: an exception, a text, or an ``error`` as recorded
        (``{"type", "message"}``, what RQ reads back from its traceback)."""

        def failed(r: Recorder) -> bool:
            if isinstance(error, (BaseException, str)):
                return r.failed(job_id, error, attempt=attempt)
            return r.change(Change(job_id, "failed", attempt=attempt, error=error))

        return self._record(
            job_id,
            "failed",
            failed,
            lambda r, why: r.change(
                Change(
                    job_id, "failed", attempt=attempt, error=refused_error(error, why)
                )
            ),
        )

    def cancelled(self, job_id: str, attempt: int | None) -> bool:
        return self._record(
            job_id, "cancelled", lambda r: r.cancelled(job_id, attempt=attempt)
        )

    def attempt_of(self, job_id: str) -> int:
        """The job's current attempt as recorded (1 when unknown or unreadable)."""
        record = self._recorded(job_id)
        return 1 if record is None else _attempt_in(record)

    def ended_attempt(self, job_id: str) -> int | None:
        """The attempt whose end is recorded (its status terminal), or None:
        the job is not recorded, not ended, or unreadable."""
        record = self._recorded(job_id)
        status = None if record is None else record.get("job_status")
        # A status another program wrote may be any JSON value (a dict
        # cannot be looked up in a set): only a text names an end.
        if record is None or not isinstance(status, str):
            return None
        return _attempt_in(record) if status in self.recorder.terminal else None

    def _recorded(self, job_id: str) -> Record | None:
        if not is_valid_job_id(job_id):
            return None  # never recorded (``_refuse`` says so)
        try:
            row = self.recorder.store.read(job_id)
        except Exception as exc:
            log.warning("job %s: attempt not read: %s", job_id, exc)
            return None
        return None if row is None else row.record

    def close(self) -> None:
        """Close a store this recorder opened from a URL (in this process)."""
        opened = self._opened
        if opened is not None and opened[0] == os.getpid():
            opened[1].close()
            self._opened = None

    def _record(
        self,
        job_id: str,
        event: str,
        call: Callable[[Recorder], bool],
        instead: Callable[[Recorder, InvalidRecord], bool] | None = None,
    ) -> bool:
        """``call``, tried again only when the store failed; ``instead``,
        for a job's end: what to record when the store refuses the record
        (its response or error larger than the store holds), so that the
        job still ends."""
        if not is_valid_job_id(job_id):
            # No store takes it, whatever the event: said once, up front,
            # never taken for a value too large.
            self._refuse(job_id)
            return False
        pause = self.pause
        tries = 1 if self.clock() < self._down_until else self.tries
        for attempt in range(1, tries + 1):
            try:
                applied = call(self.recorder)
            except InvalidRecord as exc:
                # Not the store's fault: trying again writes the same thing.
                if instead is not None:
                    log.warning(
                        "job %s: %s recorded without its value: %s",
                        job_id,
                        event,
                        message_of(exc),
                    )
                    return self._record(job_id, event, _given(instead, exc))
                log.warning(
                    "job %s: %s not recorded: %s", job_id, event, message_of(exc)
                )
                return False
            except (StoreError, OSError) as exc:
                # The store failed (down, busy): worth another try.
                if attempt == tries:
                    self._down_until = self.clock() + DOWN_SECONDS
                    log.warning(
                        "job %s: %s not recorded after %d %s, dropped: %s",
                        job_id,
                        event,
                        tries,
                        "try" if tries == 1 else "tries",
                        message_of(exc),
                    )
                    return False
                self.sleep(pause)
                pause *= 2
            except Exception as exc:
                # Not an outage (a bug, a value's own code that raised):
                # trying again would fail the same way.
                log.warning(
                    "job %s: %s not recorded: %s: %s",
                    job_id,
                    event,
                    type(exc).__name__,
                    message_of(exc),
                    # A setting (a store opened before a fork) says its fix.
                    exc_info=None if isinstance(exc, ConfigError) else exc,
                )
                return False
            else:
                self._down_until = 0.0  # it answers again
                return applied
        return False

    def _refuse(self, job_id: str) -> None:
        """Warn that the job ``job_id`` names is not recorded (once per job)."""
        with self._lock:
            if job_id in self._refused:
                return
            if len(self._refused) >= REFUSED_KEPT:
                del self._refused[next(iter(self._refused))]
            self._refused[job_id] = None
        log.warning("job %.200r not recorded: a job id must be %s", job_id, JOB_ID_RULE)


def _attempt_in(record: Record) -> int:
    attempt = record.get("attempt")
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
        return attempt
    return 1


def _given(
    call: Callable[[Recorder, InvalidRecord], bool], why: InvalidRecord
) -> Callable[[Recorder], bool]:
    return lambda r: call(r, why)


@dataclass(frozen=True, slots=True)
class CurrentTask:
    recorder: TaskRecorder
    job_id: str
    attempt: int | None


_current: ContextVar[CurrentTask | None] = ContextVar("jobstatus_task", default=None)


def enter_task(task: CurrentTask) -> None:
    """Mark ``task`` as the one this thread runs (until ``leave_task``)."""
    _current.set(task)


def leave_task() -> CurrentTask | None:
    """Unmark the task this thread ran; returns it (None if there was none)."""
    task = _current.get()
    _current.set(None)
    return task


def progress(
    done: float, total: float | None = None, message: str | None = None
) -> bool:
    """Record the progress of the task this thread runs; whether it applied.

    Called outside a task it raises ``RuntimeError``; a store that is down is
    logged, and the task goes on.
    """
    task = _current.get()
    if task is None:
        raise RuntimeError("progress() records the task it is called from: none runs")
    return task.recorder.progress(task.job_id, task.attempt, done, total, message)
