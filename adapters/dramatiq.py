"""Job states recorded straight from Dramatiq: ``install(broker, store)``.

A broker middleware records each message by its ``message_id``: ``queued``
when it is sent (in the sending process), ``running`` when a worker takes
it, ``done`` with the actor's return value, ``failed`` with the exception
once no retry follows, a retry as the next ``attempt``, and a skipped
message (its age limit passed; aborted with dramatiq-abort) as
``cancelled``, and a message for an actor the worker does not declare as
``failed``. docs/queues.md has the table.
"""

from __future__ import annotations

from typing import Any

from jobstatus_core import Store

from .taskrecording import CurrentTask, TaskRecorder, enter_task, leave_task, progress

INSTALL = "pip install 'jobstatus[dramatiq]'"

try:
    import dramatiq
    from dramatiq.broker import MessageProxy
    from dramatiq.errors import ActorNotFound
    from dramatiq.middleware import Middleware, Retries
except ImportError as exc:  # pragma: no cover - the extra is in the test env
    raise ImportError(f"recording Dramatiq jobs needs dramatiq: {INSTALL}") from exc

__all__ = ["JobStatusMiddleware", "install", "progress"]


def attempt_of(message: dramatiq.Message[Any] | MessageProxy) -> int:
    # The Retries middleware counts the retries so far in the message's
    # options, and the count travels with the message: attempt = retries + 1.
    retries = message.options.get("retries", 0)
    return retries + 1 if isinstance(retries, int) and retries >= 0 else 1


class JobStatusMiddleware(Middleware):
    """Records every message's states through a ``TaskRecorder``."""

    def __init__(
        self,
        recorder: TaskRecorder,
        cancelled_by: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.recorder = recorder
        #: Exceptions that mean the task was stopped on purpose (such as
        #: dramatiq-abort's ``Abort``): recorded ``cancelled``, not ``failed``.
        self.cancelled_by = cancelled_by

    def after_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int
    ) -> None:
        self.recorder.queued(
            message.message_id, attempt_of(message), message.actor_name
        )

    def before_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy
    ) -> None:
        attempt = attempt_of(message)
        enter_task(CurrentTask(self.recorder, message.message_id, attempt))
        # The task too: a worker may start it before the publisher's
        # ``queued`` lands, which the order rules then drop.
        self.recorder.running(message.message_id, attempt, task=message.actor_name)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        task = leave_task()
        job_id = message.message_id
        # The attempt that ran: Retries has already counted a failure.
        attempt = task.attempt if task is not None and task.job_id == job_id else None
        if exception is None:
            self.recorder.done(job_id, attempt, result)
        elif isinstance(exception, self.cancelled_by):
            self.recorder.cancelled(job_id, attempt)
        else:
            # When Retries sent the message again, its next attempt is
            # already recorded, and this older one is ignored.
            self.recorder.failed(job_id, attempt, exception)

    def after_skip_message(
        self, broker: dramatiq.Broker, message: MessageProxy
    ) -> None:
        leave_task()
        self.recorder.cancelled(message.message_id, attempt_of(message))

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        # A message for an actor this worker does not declare never runs:
        # Dramatiq moves it to the dead-letter queue, and only the nack tells.
        # (Any other nack follows a run whose end is already recorded.)
        try:
            broker.get_actor(message.actor_name)
        except ActorNotFound:
            error = {
                "type": "ActorNotFound",
                "message": f"no actor {message.actor_name!r} in the worker",
            }
            self.recorder.failed(message.message_id, attempt_of(message), error)


def install(
    broker: dramatiq.Broker,
    store: Store | str,
    *,
    cancelled_by: tuple[type[BaseException], ...] = (),
) -> JobStatusMiddleware:
    """Record the states of every message of ``broker`` in ``store`` (an
    object, or a URL). Call it where the broker is set up, so that the
    senders and the workers both run it."""
    middleware = JobStatusMiddleware(TaskRecorder(store), cancelled_by)
    if any(isinstance(m, Retries) for m in broker.middleware):
        # Hooks after an event run in reverse order: placed before Retries,
        # ours see a failure after Retries decided on it (and sent the retry).
        broker.add_middleware(middleware, before=Retries)
    else:
        broker.add_middleware(middleware)
    return middleware
