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
from typing import Any

try:
    from rq import Queue, Retry, Worker, get_current_job
    from rq.job import Job, JobStatus
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the RQ adapter needs RQ: pip install 'jobstatus[rq]'") from exc

from jobstatus_core import ConfigError, Store

from .taskrecording import TaskRecorder, response_of

__all__ = ["RecordingWorker", "install", "progress"]

#: Where a job keeps its attempt number across retries (RQ counts retries
#: left, not attempts made): in ``job.meta``, saved with the requeue itself.
ATTEMPT_KEY = "jobstatus_attempt"

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
    jobstatus_adapters.rq.RecordingWorker``, store in ``JOBSTATUS_STORE``)."""

    def __init__(self, *args: Any, store: Store | str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        found = store if store is not None else os.environ.get("JOBSTATUS_STORE")
        if not found:
            raise ConfigError(
                "JOBSTATUS_STORE: set it to the store URL the worker records in"
            )
        self.recording = TaskRecorder(found)
        # Opened here, in the worker, not in each work horse it forks: a
        # horse then only reconnects (or reopens an SQLite file) instead of
        # importing and checking the store for every job.
        self.recording.open()
        self._errors: dict[str, BaseException] = {}

    def prepare_job_execution(
        self, job: Job, remove_from_intermediate_queue: bool = False
    ) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        global _running
        _running = self.recording
        job_id, attempt, task = job.id, attempt_of(job), job.func_name
        self.recording.record(
            job_id, lambda r: r.running(job_id, attempt=attempt, task=task)
        )

    def _finalize_success(
        self, job: Job, queue: Queue, execution: Any, return_value: Any
    ) -> None:
        # The one place RQ hands over the return value (a ``Retry`` too).
        attempt = attempt_of(job)
        if isinstance(return_value, Retry):
            job.meta[ATTEMPT_KEY] = attempt + 1
        super()._finalize_success(job, queue, execution, return_value)
        self._ended(job, attempt, return_value)

    def handle_exception(self, job: Job, *exc_info: Any) -> Any:
        if len(exc_info) > 1 and isinstance(exc_info[1], BaseException):
            self._errors[job.id] = exc_info[1]
        return super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        attempt = attempt_of(job)
        if job.should_retry:
            job.meta[ATTEMPT_KEY] = attempt + 1  # saved only if RQ requeues
        super().handle_job_failure(
            job, queue, started_job_registry, exc_string, execution
        )
        lines = exc_string.strip().splitlines()
        error: BaseException | str = self._errors.pop(job.id, None) or (
            lines[-1] if lines else "failed"
        )
        self._ended(job, attempt, error=error)

    def _ended(
        self,
        job: Job,
        attempt: int,
        return_value: Any = None,
        error: BaseException | str = "failed",
    ) -> None:
        job_id = job.id
        status = job.get_status(refresh=False)
        if status == JobStatus.FINISHED:
            response = response_of(return_value)
            self.recording.record(
                job_id, lambda r: r.done(job_id, response, attempt=attempt)
            )
        elif status == JobStatus.STOPPED:
            self.recording.record(
                job_id, lambda r: r.cancelled(job_id, attempt=attempt)
            )
        elif status == JobStatus.FAILED:
            self.recording.record(
                job_id, lambda r: r.failed(job_id, error, attempt=attempt)
            )
        elif status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            again, task = attempt + 1, job.func_name
            self.recording.record(
                job_id, lambda r: r.queued(job_id, attempt=again, task=task)
            )


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
