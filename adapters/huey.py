"""Job states recorded straight from Huey: ``install(huey, store)``.

Huey's signals and its post-execute hook record each task by its id:
``queued`` once it is enqueued (in the enqueuing process), ``running`` when
a consumer starts it, ``done`` with its return value, ``failed`` with the
exception once no retry follows, a retry as the next ``attempt``, a revoked,
expired or cancelled task as ``cancelled``, and a task the consumer
interrupted when it stopped as ``failed``. docs/queues.md has the table.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from jobstatus_core import Store

from .taskrecording import CurrentTask, TaskRecorder, enter_task, leave_task, progress

INSTALL = "pip install 'jobstatus[huey]'"

try:
    import huey as huey_module
    from huey import signals
    from huey.api import Task
    from huey.exceptions import CancelExecution
except ImportError as exc:  # pragma: no cover - the extra is in the test env
    raise ImportError(f"recording Huey jobs needs huey: {INSTALL}") from exc

__all__ = ["TaskInterrupted", "install", "progress"]

#: The name of the post-execute hook this adapter adds.
HOOK = "jobstatus"


class TaskInterrupted(Exception):
    """Recorded for a task that its consumer stopped before it finished."""


class HueyHooks:
    """Huey signal handlers and a post-execute hook, recording through a
    ``TaskRecorder``."""

    def __init__(self, recorder: TaskRecorder) -> None:
        self.recorder = recorder

    def enqueued(self, task: Any) -> None:
        self.recorder.queued(task.id, None, task.name)

    def executing(self, signal: str, task: Any) -> None:
        enter_task(CurrentTask(self.recorder, task.id, None))
        # The task too, as Dramatiq's and Celery's: the publisher's
        # ``queued`` may land after it, and be dropped.
        self.recorder.running(task.id, None, task=task.name)

    def finished(self, task: Any, value: Any, exception: BaseException | None) -> None:
        leave_task()
        if exception is None:
            self.recorder.done(task.id, None, value)
        elif not task.retries and not isinstance(exception, CancelExecution):
            # With retries left, Huey sends the task again: `retrying`
            # records the next attempt instead. A cancel has its own signal.
            self.recorder.failed(task.id, None, exception)

    def retrying(self, signal: str, task: Any) -> None:
        # Huey counts retries down and keeps no attempt number: the next
        # attempt is the one recorded plus one (this worker ran that one).
        self.recorder.queued(task.id, self.recorder.attempt_of(task.id) + 1, task.name)

    def cancelled(self, signal: str, task: Any) -> None:
        leave_task()
        self.recorder.cancelled(task.id, None)

    def interrupted(self, signal: str, task: Any) -> None:
        leave_task()
        error = TaskInterrupted("the consumer stopped before the task finished")
        self.recorder.failed(task.id, None, error)


def install(huey: huey_module.Huey, store: Store | str) -> HueyHooks:
    """Record the states of every task of ``huey`` in ``store`` (an object,
    or a URL). Call it where the Huey app is made, so that the enqueuing
    processes and the consumers both run it."""
    hooks = HueyHooks(TaskRecorder(store))
    # The class's enqueue, not the instance's: installed again, this one
    # replaces the wrapper before it instead of wrapping it (queued twice).
    enqueue = partial(type(huey).enqueue, huey)

    def enqueue_and_record(task: Any) -> Any:
        # Not on SIGNAL_ENQUEUED: Huey sends it before it pickles and writes
        # the message, so a task whose enqueue then failed (an argument that
        # does not pickle, the broker down) would look queued forever.
        if not isinstance(task, Task):
            return enqueue(task)  # a group or chord: each task comes back here
        if huey.immediate:
            # Immediate mode runs the task inside enqueue: queued comes first.
            hooks.enqueued(task)
            return enqueue(task)
        result = enqueue(task)
        hooks.enqueued(task)  # the message is written
        return result

    # On the instance: Huey's own code (retries, pipelines, the consumer's
    # schedule) enqueues through ``self.enqueue`` too.
    huey.enqueue = enqueue_and_record
    huey.signal(signals.SIGNAL_EXECUTING)(hooks.executing)
    huey.signal(signals.SIGNAL_RETRYING)(hooks.retrying)
    huey.signal(
        signals.SIGNAL_REVOKED, signals.SIGNAL_EXPIRED, signals.SIGNAL_CANCELED
    )(hooks.cancelled)
    huey.signal(signals.SIGNAL_INTERRUPTED)(hooks.interrupted)
    # SIGNAL_COMPLETE carries no return value; the post-execute hook does,
    # and runs before Huey decides on a retry (task.retries tells).
    huey.post_execute(HOOK)(hooks.finished)
    return hooks
