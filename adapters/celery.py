"""Celery: job states recorded from Celery's own signals.

``install(app, store)`` in the module that builds the app (so the publishing
processes and the workers both run it); the task id is the ``job_id``.
Celery's ``retries`` counter is the attempt, so a late event of an earlier
attempt never touches a retry.
"""

from __future__ import annotations

from typing import Any

try:
    from celery import Celery, Task, current_task, signals
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the Celery adapter needs Celery: pip install 'jobstatus[celery]'"
    ) from exc

from jobstatus_core import Store

from .taskrecording import TaskRecorder

__all__ = ["CeleryRecording", "install", "progress"]

_installed: dict[int, CeleryRecording] = {}


class CeleryRecording:
    """The signal receivers of one app; ``uninstall()`` disconnects them."""

    def __init__(self, app: Celery, store: Store | str) -> None:
        self.app = app
        self.recording = TaskRecorder(store)

    # Publishing side: the message is in the broker (a publish that failed
    # never becomes a job that looks queued).
    def published(
        self, sender: str | None = None, headers: Any = None, body: Any = None, **_: Any
    ) -> None:
        info = headers if isinstance(headers, dict) and "id" in headers else body
        if not isinstance(info, dict) or not isinstance(info.get("id"), str):
            return
        job_id: str = info["id"]
        attempt = _attempt(info.get("retries"))
        task = sender or info.get("task")
        self.recording.record(
            job_id, lambda r: r.queued(job_id, attempt=attempt, task=task), "queued"
        )

    def prerun(self, sender: Task | None = None, task_id: str = "", **_: Any) -> None:
        if sender is None or sender.app is not self.app:
            return
        attempt = _attempt(sender.request.retries)
        name = sender.name
        self.recording.running(task_id, attempt, task=name)

    def succeeded(
        self, sender: Task | None = None, result: Any = None, **_: Any
    ) -> None:
        if sender is None or sender.app is not self.app:
            return
        job_id = sender.request.id
        attempt = _attempt(sender.request.retries)
        self.recording.done(job_id, attempt, result)

    def failed(
        self,
        sender: Task | None = None,
        task_id: str = "",
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        if sender is None or sender.app is not self.app:
            return
        # Sent from the worker's main process when a pool child died
        # (WorkerLostError): the request there is not the task's context.
        retries = sender.request.retries if sender.request.id == task_id else None
        attempt = None if retries is None else _attempt(retries)
        error: BaseException | str = exception or "failed"
        self.recording.failed(task_id, attempt, error)

    def revoked(
        self, sender: Task | None = None, request: Any = None, **_: Any
    ) -> None:
        if sender is None or sender.app is not self.app or request is None:
            return
        job_id = request.id
        attempt = _attempt(getattr(request, "retries", None))
        self.recording.cancelled(job_id, attempt)

    # Worker side, a message it drops without running it: recorded
    # ``failed``, or the job would look queued forever.
    def unknown(
        self, sender: Any = None, message: Any = None, name: Any = None, **fields: Any
    ) -> None:
        # No task of that name in the worker (not deployed there, its module
        # not imported): Celery logs "Received unregistered task".
        job_id = fields.get("id")
        if getattr(sender, "app", None) is not self.app or not isinstance(job_id, str):
            return
        attempt = _attempt(_headers_of(message).get("retries"))
        error = {
            "type": "NotRegistered",
            "message": f"Received unregistered task of type {name!r}",
        }
        self.recording.failed(job_id, attempt, error)

    def rejected(
        self, sender: Any = None, message: Any = None, exc: Any = None, **_: Any
    ) -> None:
        # A task message the worker refused (an ETA or expiry it cannot
        # read, content it does not accept); ``exc`` is None for a message
        # that is no task at all, which has no id.
        headers = _headers_of(message)
        job_id = headers.get("id")
        if (
            getattr(sender, "app", None) is not self.app
            or not isinstance(job_id, str)
            or not isinstance(exc, BaseException)
        ):
            return
        self.recording.failed(job_id, _attempt(headers.get("retries")), exc)

    def connect(self) -> None:
        signals.after_task_publish.connect(self.published, weak=False)
        signals.task_prerun.connect(self.prerun, weak=False)
        signals.task_success.connect(self.succeeded, weak=False)
        signals.task_failure.connect(self.failed, weak=False)
        signals.task_revoked.connect(self.revoked, weak=False)
        signals.task_unknown.connect(self.unknown, weak=False)
        signals.task_rejected.connect(self.rejected, weak=False)

    def uninstall(self) -> None:
        signals.after_task_publish.disconnect(self.published)
        signals.task_prerun.disconnect(self.prerun)
        signals.task_success.disconnect(self.succeeded)
        signals.task_failure.disconnect(self.failed)
        signals.task_revoked.disconnect(self.revoked)
        signals.task_unknown.disconnect(self.unknown)
        signals.task_rejected.disconnect(self.rejected)
        _installed.pop(id(self.app), None)
        self.recording.close()


def install(app: Celery, store: Store | str) -> CeleryRecording:
    """Record the states of ``app``'s tasks in ``store`` (a store or a URL)."""
    found = _installed.get(id(app))
    if found is not None:
        found.uninstall()
    recording = CeleryRecording(app, store)
    recording.connect()
    _installed[id(app)] = recording
    return recording


def progress(
    done: float, total: float | None = None, message: str | None = None
) -> bool:
    """Record the running task's progress; whether it applied."""
    task = current_task
    if task is None or not task.request.id:
        raise RuntimeError("progress() records the running task: call it in one")
    recording = _installed.get(id(task.app))
    if recording is None:
        raise RuntimeError("jobstatus_adapters.celery.install(app, store) first")
    job_id: str = task.request.id
    attempt = _attempt(task.request.retries)
    return recording.recording.progress(job_id, attempt, done, total, message)


def _headers_of(message: Any) -> dict[str, Any]:
    """A received message's headers (protocol 2: its id, task, retries)."""
    headers = getattr(message, "headers", None)
    return headers if isinstance(headers, dict) else {}


def _attempt(retries: object) -> int:
    return retries + 1 if isinstance(retries, int) and retries >= 0 else 1
