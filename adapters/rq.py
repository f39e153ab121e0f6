"""RQ: job states recorded by a Worker subclass, and by the queue for ``queued``.

RQ has no signals, and its job callbacks are set per enqueue call, have no
"started" callback, and run ``on_failure`` before RQ decides to retry. A
``Worker`` subclass is RQ's own extension point (``rq worker -w``): it sees
every job's start, end, retry and stop, and the death of a work horse,
whatever enqueued the job. ``install(queue, store)`` hooks the queue for
``queued``; the worker takes its store from ``JOBSTATUS_STORE`` (the
setting every jobstatus process reads) or ``RecordingWorker(..., store=)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

try:
    from rq import Queue, Retry, SimpleWorker, Worker, get_current_job
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus
    from rq.results import Result
    from rq.worker import BaseWorker
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the RQ adapter needs RQ: pip install 'jobstatus[rq]'") from exc

from jobstatus_core import ConfigError, Store

from .taskrecording import REPR_LIMIT, TaskRecorder, log

__all__ = [
    "RecordingMixin",
    "RecordingWorker",
    "SimpleRecordingWorker",
    "install",
    "progress",
]

#: Where a job keeps its attempt number across retries (RQ counts retries
#: left, not attempts made): in ``job.meta``, saved with the requeue itself.
ATTEMPT_KEY = "jobstatus_attempt"

#: How the traceback RQ stored reads (Python's own format): a traceback's
#: head, an exception group's head and the margin of its lines, the lines
#: between the exceptions of a chain, and what a type looks like in
#: ``Type: message`` (``ValueError``, ``rq.timeouts.JobTimeoutException``).
TRACEBACK_HEAD = "Traceback (most recent call last):"
GROUP_HEAD = "+ Exception Group Traceback (most recent call last):"
GROUP_MARGIN = "  | "
CHAINING = frozenset(
    {
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    }
)
EXCEPTION_TYPE = re.compile(r"[A-Za-z_][\w.<>]*")

#: The error text of a job that returned ``Retry`` past its ``max`` (RQ
#: stores no traceback then, only a result of that type).
MAX_RETRIES_EXCEEDED = "max retries exceeded"

#: The recorder of the worker running a job in this process (a work horse).
_running: TaskRecorder | None = None


def install(queue: Queue, store: Store | str) -> Queue:
    """Record ``queued`` for every job ``queue`` enqueues or schedules; the
    worker side is ``RecordingWorker``. A synchronous queue (``is_async=False``)
    runs each job as it is enqueued: it records the job's every state
    itself. Returns the queue."""
    recording = TaskRecorder(store)
    enqueue_job = queue.enqueue_job
    enqueue_many = queue.enqueue_many
    schedule_job = queue.schedule_job
    run_job = queue.run_job

    def enqueue_and_record(job: Job, *args: Any, **kwargs: Any) -> Job:
        job = enqueue_job(job, *args, **kwargs)
        _record_queued(recording, job)
        return job

    def enqueue_many_and_record(*args: Any, **kwargs: Any) -> list[Job]:
        # RQ enqueues these through ``_enqueue_job``, not ``enqueue_job``.
        jobs = enqueue_many(*args, **kwargs)
        for job in jobs:
            _record_queued(recording, job)
        return jobs

    def schedule_and_record(job: Job, *args: Any, **kwargs: Any) -> Job:
        job = schedule_job(job, *args, **kwargs)
        _record_queued(recording, job)
        return job

    def run_and_record(job: Job) -> Job:
        # A synchronous queue runs the job here, inside ``enqueue_job``,
        # before that returns: no worker sees it.
        global _running
        job_id, attempt = job.id, attempt_of(job)
        _record_queued(recording, job)  # saved to Redis just before this run
        recording.running(job_id, attempt)
        _running, before = recording, _running  # progress() finds it here
        try:
            ran = run_job(job)
        except BaseException as exc:
            # RQ records the failure and goes on (the enqueue returns).
            recording.failed(job_id, attempt, exc)
            raise
        finally:
            _running = before
        # What the job returned, as RQ holds it after ``perform``: reading it
        # back from Redis (``return_value``) could fail a job that succeeded
        # (a blip, a result that does not unpickle), and with
        # ``result_ttl=0`` finds nothing.
        recording.done(job_id, attempt, ran._result)
        return ran

    # On the instance: the queue's own methods call these through ``self``.
    queue.enqueue_job = enqueue_and_record  # type: ignore[method-assign]
    queue.enqueue_many = enqueue_many_and_record  # type: ignore[method-assign]
    queue.schedule_job = schedule_and_record  # type: ignore[method-assign]
    queue.run_job = run_and_record  # type: ignore[method-assign]
    return queue


def _record_queued(recording: TaskRecorder, job: Job) -> None:
    job_id = job.id
    attempt = attempt_of(job)
    task = job.func_name
    recording.record(
        job_id, lambda r: r.queued(job_id, attempt=attempt, task=task), "queued"
    )


def attempt_of(job: Job) -> int:
    found = job.meta.get(ATTEMPT_KEY)
    return found if isinstance(found, int) and found >= 1 else 1


@dataclass(frozen=True, slots=True)
class Before:
    """What the worker's copy of a job said before it ran: RQ may delete
    the job, and a ``SimpleWorker`` run changes that copy in place."""

    attempt: int
    repeats_left: int | None
    result_ttl: int | None
    failure_ttl: int | None

    @classmethod
    def of(cls, job: Job) -> Before:
        return cls(attempt_of(job), job.repeats_left, job.result_ttl, job.failure_ttl)


class RecordingMixin(BaseWorker):
    """What records each job's states, for any RQ worker class: the states
    are recorded in the worker process, around ``execute_job`` (a forked
    work horse for ``Worker``, the job itself for ``SimpleWorker``).

    The worker's store is opened once and stays warm, where a horse would
    reconnect (or reopen an SQLite file) for every job. A horse only bumps
    the attempt of a job RQ runs again, and opens the store when its task
    reports ``progress``.
    """

    def __init__(self, *args: Any, store: Store | str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        found = store if store is not None else os.environ.get("JOBSTATUS_STORE")
        if not found:
            raise ConfigError(
                "JOBSTATUS_STORE: set it to the store URL the worker records in"
            )
        self.recording = TaskRecorder(found)
        self.recording.open()  # a bad URL or an unreachable store stops the start
        #: What RQ failed the job with in this process (a horse killed or
        #: stopped, or any failure of a job run in this process): its
        #: ``exc_string``, by job id.
        self._failed_here: dict[str, str] = {}

    def execute_job(self, job: Job, queue: Queue) -> None:
        ended = self.recording.ended_attempt(job.id)
        if ended is not None and ended >= attempt_of(job):
            # Run again after its recorded end: requeued from RQ's failed
            # registry (``job.requeue()``, ``rq requeue``), outside any
            # worker and with whatever meta the requeuing ``Job`` held. The
            # same attempt again would be taken for late events of the one
            # that ended: this run is the next (the horse forks with it).
            job.meta[ATTEMPT_KEY] = ended + 1
        job_id, before, task = job.id, Before.of(job), job.func_name
        attempt = before.attempt
        # Dequeued and about to run: the job is starting.
        self.recording.running(job_id, attempt, task=task)
        try:
            super().execute_job(job, queue)
        finally:
            failed_here = self._failed_here.pop(job_id, None)
        # The job has ended: what it left is in Redis. Recording is a side
        # effect: whatever goes wrong reading or recording it, the worker
        # goes on to its next job.
        try:
            self._ended(job_id, before, failed_here)
        except Exception as exc:
            log.warning(
                "job %s: end not recorded: %s: %s",
                job_id,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )

    def prepare_job_execution(
        self, job: Job, remove_from_intermediate_queue: bool = False
    ) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        # Where the job runs: progress() finds the recorder here; in a horse
        # it opens the store only when the task calls it.
        global _running
        _running = self.recording

    def _finalize_success(
        self, job: Job, queue: Queue, execution: Any, return_value: Any
    ) -> None:
        # Where the job ran, before RQ requeues the job (and saves its meta).
        if isinstance(return_value, Retry):
            job.meta[ATTEMPT_KEY] = attempt_of(job) + 1
        super()._finalize_success(job, queue, execution, return_value)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: Any, execution: Any
    ) -> None:
        # A run that succeeded with repeats left: RQ's Repeat.schedule saves
        # the job (and its meta) as it requeues it for the next run.
        if job.repeats_left:
            job.meta[ATTEMPT_KEY] = attempt_of(job) + 1
        super().handle_job_success(job, queue, started_job_registry, execution)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        # Where the job ran (it raised) or in the worker (the horse was
        # killed or stopped): before RQ requeues the job.
        if job.should_retry:
            job.meta[ATTEMPT_KEY] = attempt_of(job) + 1  # saved only if RQ requeues
        if not self.is_horse:
            self._failed_here[job.id] = exc_string
        super().handle_job_failure(
            job, queue, started_job_registry, exc_string, execution
        )

    def _ended(self, job_id: str, before: Before, failed_here: str | None) -> None:
        attempt = before.attempt
        try:
            job = self.job_class.fetch(
                job_id, connection=self.connection, serializer=self.serializer
            )
        except NoSuchJobError:
            self._deleted(job_id, before, failed_here)
            return
        status = job.get_status(refresh=False)
        if status == JobStatus.FINISHED:
            self._done(job, attempt)
        elif status == JobStatus.STOPPED:
            self.recording.cancelled(job_id, attempt)
        elif status == JobStatus.FAILED:
            if failed_here is None:
                result = job.latest_result()
                if (
                    result is not None
                    and result.type == Result.Type.MAX_RETRIES_EXCEEDED
                ):
                    failed_here = MAX_RETRIES_EXCEEDED
                else:
                    failed_here = "" if result is None else result.exc_string or ""
            self._failed(job_id, attempt, failed_here)
        elif status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            if repeated(before, job):
                self._done(job, attempt)
            self.recording.queued(job_id, attempt + 1, job.func_name)
        # Any other status: another worker already runs the next attempt,
        # and records it.

    def _deleted(self, job_id: str, before: Before, failed_here: str | None) -> None:
        """A job gone from Redis once it ended: RQ deletes a job at once
        that succeeded with ``result_ttl=0``, or failed with
        ``failure_ttl=0``; the worker's copy tells which."""
        attempt = before.attempt
        if before.result_ttl == 0 and before.failure_ttl != 0:
            self.recording.done(job_id, attempt, None)
        elif before.failure_ttl == 0 and before.result_ttl != 0:
            self._failed(job_id, attempt, failed_here or "")
        else:
            # Both 0 (either end deletes it), or neither (someone deleted
            # it): which end it reached is unknown, so none is recorded.
            log.info("job %s: deleted before its end was read: not recorded", job_id)

    def _done(self, job: Job, attempt: int) -> None:
        job_id = job.id
        try:
            result = job.latest_result()
        except Exception as exc:  # a return value that does not unpickle here
            value: Any = unreadable(exc)
        else:
            value = None if result is None else result.return_value
        self.recording.done(job_id, attempt, value)

    def _failed(self, job_id: str, attempt: int, exc_string: str) -> None:
        self.recording.failed(job_id, attempt, error_of(exc_string))


class RecordingWorker(RecordingMixin, Worker):
    """``rq.Worker`` that records each job's states (``rq worker -w
    jobstatus_adapters.rq.RecordingWorker``, store in ``JOBSTATUS_STORE``),
    around the work horse it forks per job."""


class SimpleRecordingWorker(RecordingMixin, SimpleWorker):
    """``rq.SimpleWorker`` that records each job's states (``rq worker -w
    jobstatus_adapters.rq.SimpleRecordingWorker``): it runs each job in its
    own process, without forking (what RQ advises for tests and Windows)."""


def repeated(before: Before, after: Job) -> bool:
    """Whether the run that just ended succeeded and RQ requeued the job
    for its next repeat: only that spends one of its repeats (a retry
    spends a retry)."""
    return (
        before.repeats_left is not None
        and after.repeats_left is not None
        and after.repeats_left < before.repeats_left
    )


def unreadable(exc: Exception) -> dict[str, Any]:
    """The ``response`` of a job whose saved return value the worker cannot
    load (its class does not unpickle there): ``response_of``'s shape, with
    why in ``repr`` and no ``type``."""
    text = f"<unreadable result: {type(exc).__name__}: {exc}>"
    return {"repr": text[:REPR_LIMIT], "type": None}


def error_of(exc_string: str) -> dict[str, str]:
    """The recorded ``error`` of a job RQ failed with ``exc_string``.

    A traceback (the task raised where it ran) ends with the exception's
    type and ``str``: ``{"type": "ValueError", "message": "boom"}``, the
    type without its module, as ``Recorder.failed`` records an exception.
    Of a chain, the last exception is the one raised; of an exception group,
    the group itself. Anything else (a horse killed, a ``Retry`` past its
    ``max``) is recorded as ``Recorder.failed`` records a text: its last
    line, as an ``Error``.
    """
    # Lines as traceback joins them ("\n" alone): a message's own "\r\n",
    # "\x0b" or U+2028, and its trailing spaces, stay as raised.
    lines = exc_string.rstrip("\n").split("\n")
    # The last exception of a chain: after the last separator Python prints
    # at the left margin (those of a group's members are indented).
    for at in range(len(lines) - 1, -1, -1):
        if lines[at] in CHAINING:
            del lines[: at + 1]
            break
    while lines and not lines[0].strip():
        del lines[0]
    body: list[str] = []
    if lines and lines[0] == TRACEBACK_HEAD:
        body = lines[1:]
    elif lines and lines[0].strip() == GROUP_HEAD:
        # The group's own lines, each behind "  | ", up to its members.
        for line in lines[1:]:
            if not line.startswith(GROUP_MARGIN):
                break
            body.append(line[len(GROUP_MARGIN) :])
    # Past the frames (indented: file, code, carets): the exception itself,
    # to the end (its message may span lines, even hold a traceback).
    while body and body[0][:1].isspace():
        del body[0]
    if body:
        kind, _, first = body[0].partition(": ")
        if EXCEPTION_TYPE.fullmatch(kind):
            message = "\n".join([first, *body[1:]])
            return {"type": kind.rpartition(".")[2], "message": message}
    last = lines[-1].strip() if lines else ""
    return {"type": "Error", "message": last or "failed"}


def progress(
    done: float, total: float | None = None, message: str | None = None
) -> bool:
    """Record the running job's progress; whether it applied."""
    job = get_current_job()
    if job is None or _running is None:
        raise RuntimeError(
            "progress() records the job a RecordingWorker runs: call it in one"
        )
    return _running.progress(job.id, attempt_of(job), done, total, message)
