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
from typing import Any

try:
    from rq import Queue, Retry, Worker, get_current_job
    from rq.exceptions import InvalidJobOperation
    from rq.job import Job, JobStatus
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the RQ adapter needs RQ: pip install 'jobstatus[rq]'") from exc

from jobstatus_core import ConfigError, Store
from jobstatus_core.recording import Change

from .taskrecording import TaskRecorder, response_of

__all__ = ["RecordingWorker", "install", "progress"]

#: Where a job keeps its attempt number across retries (RQ counts retries
#: left, not attempts made): in ``job.meta``, saved with the requeue itself.
ATTEMPT_KEY = "jobstatus_attempt"

#: Where the last exception of a traceback RQ stored begins, and what its
#: type looks like there (``ValueError``, ``rq.timeouts.JobTimeoutException``).
TRACEBACK_HEAD = "Traceback (most recent call last):"
EXCEPTION_TYPE = re.compile(r"[A-Za-z_][\w.<>]*")

#: The recorder of the worker running a job in this process (a work horse).
_running: TaskRecorder | None = None


def install(queue: Queue, store: Store | str) -> Queue:
    """Record ``queued`` for every job ``queue`` enqueues or schedules; the
    worker side is ``RecordingWorker``. Returns the queue."""
    recording = TaskRecorder(store)
    enqueue_job = queue.enqueue_job
    schedule_job = queue.schedule_job

    def enqueue_and_record(job: Job, *args: Any, **kwargs: Any) -> Job:
        job = enqueue_job(job, *args, **kwargs)
        _record_queued(recording, job)
        return job

    def schedule_and_record(job: Job, *args: Any, **kwargs: Any) -> Job:
        job = schedule_job(job, *args, **kwargs)
        _record_queued(recording, job)
        return job

    # On the instance: the queue's own methods call these through ``self``.
    queue.enqueue_job = enqueue_and_record  # type: ignore[method-assign]
    queue.schedule_job = schedule_and_record  # type: ignore[method-assign]
    return queue


def _record_queued(recording: TaskRecorder, job: Job) -> None:
    job_id = job.id
    attempt = attempt_of(job)
    task = job.func_name
    recording.record(job_id, lambda r: r.queued(job_id, attempt=attempt, task=task))


def attempt_of(job: Job) -> int:
    found = job.meta.get(ATTEMPT_KEY)
    return found if isinstance(found, int) and found >= 1 else 1


class RecordingWorker(Worker):
    """``rq.Worker`` that records each job's states (``rq worker -w
    jobstatus_adapters.rq.RecordingWorker``, store in ``JOBSTATUS_STORE``).

    ``running`` and the job's end are recorded here, in the worker, around
    the work horse it forks: its store is opened once and stays warm, where
    a horse would reconnect (or reopen an SQLite file) for every job. The
    horse only bumps the attempt of a job it retries, and opens the store
    when its task reports ``progress``.
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
        #: stopped): its ``exc_string``, by job id.
        self._failed_here: dict[str, str] = {}

    def execute_job(self, job: Job, queue: Queue) -> None:
        job_id, attempt, task = job.id, attempt_of(job), job.func_name
        # Dequeued and about to fork: the job is starting.
        self.recording.record(
            job_id, lambda r: r.running(job_id, attempt=attempt, task=task)
        )
        try:
            super().execute_job(job, queue)
        finally:
            failed_here = self._failed_here.pop(job_id, None)
        # The horse has ended: what it left is in Redis.
        self._ended(job, attempt, failed_here)

    def prepare_job_execution(
        self, job: Job, remove_from_intermediate_queue: bool = False
    ) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        # In the horse: progress() finds the recorder here; it opens the
        # store only when the task calls it.
        global _running
        _running = self.recording

    def _finalize_success(
        self, job: Job, queue: Queue, execution: Any, return_value: Any
    ) -> None:
        # In the horse, before RQ requeues the job (and saves its meta).
        if isinstance(return_value, Retry):
            job.meta[ATTEMPT_KEY] = attempt_of(job) + 1
        super()._finalize_success(job, queue, execution, return_value)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        # In the horse (the task raised) or in the worker (the horse was
        # killed or stopped): before RQ requeues the job.
        if job.should_retry:
            job.meta[ATTEMPT_KEY] = attempt_of(job) + 1  # saved only if RQ requeues
        if not self.is_horse:
            self._failed_here[job.id] = exc_string
        super().handle_job_failure(
            job, queue, started_job_registry, exc_string, execution
        )

    def _ended(self, job: Job, attempt: int, failed_here: str | None) -> None:
        job_id = job.id
        try:
            status = job.get_status(refresh=True)
        except InvalidJobOperation:
            # Deleted at once: only a job that succeeded with ``result_ttl=0``.
            self.recording.record(job_id, lambda r: r.done(job_id, attempt=attempt))
            return
        if status == JobStatus.FINISHED:
            result = job.latest_result()
            response = response_of(None if result is None else result.return_value)
            self.recording.record(
                job_id, lambda r: r.done(job_id, response, attempt=attempt)
            )
        elif status == JobStatus.STOPPED:
            self.recording.record(
                job_id, lambda r: r.cancelled(job_id, attempt=attempt)
            )
        elif status == JobStatus.FAILED:
            if failed_here is None:
                result = job.latest_result()
                failed_here = "" if result is None else result.exc_string or ""
            error = error_of(failed_here)
            self.recording.record(
                job_id,
                lambda r: r.change(
                    Change(job_id, "failed", attempt=attempt, error=error)
                ),
            )
        elif status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            again, task = attempt + 1, job.func_name
            self.recording.record(
                job_id, lambda r: r.queued(job_id, attempt=again, task=task)
            )
        # Any other status: another worker already runs the next attempt,
        # and records it.


def error_of(exc_string: str) -> dict[str, str]:
    """The recorded ``error`` of a job RQ failed with ``exc_string``.

    A traceback (the task raised in the horse) ends with the exception's
    type and ``str``: ``{"type": "ValueError", "message": "boom"}``, the
    type without its module, as ``Recorder.failed`` records an exception.
    Anything else (a horse killed, a ``Retry`` past its ``max``) is recorded
    as ``Recorder.failed`` records a text: its last line, as an ``Error``.
    """
    text = exc_string.strip()
    head = text.rfind(TRACEBACK_HEAD)
    lines = text[head:].splitlines()[1:] if head >= 0 else []
    # Past the frames (indented: file, code, carets): the exception itself.
    while lines and lines[0][:1].isspace():
        del lines[0]
    if lines:
        kind, _, first = lines[0].partition(": ")
        if EXCEPTION_TYPE.fullmatch(kind):
            message = "\n".join([first, *lines[1:]])
            return {"type": kind.rpartition(".")[2], "message": message}
    last = text.splitlines()[-1].strip() if text else ""
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
    recording = _running
    job_id, attempt = job.id, attempt_of(job)
    return recording.record(
        job_id, lambda r: r.progress(job_id, done, total, message, attempt=attempt)
    )
