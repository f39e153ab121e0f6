"""A Celery app whose task states the jobstatus endpoints answer.

    JOBSTATUS_STORE=sqlite:jobs.db celery -A celery_app worker

Publishers import this module too, so ``queued`` is recorded where a task is
sent, and everything else in the worker.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

from celery import Celery, Task

from jobstatus_adapters.celery import install, progress

app = Celery(
    "celery_app",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    # A message is acknowledged when its task ends, one at a time, so a
    # worker that dies mid-task leaves it for another to run.
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
install(app, os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))


@app.task
def resize(width: int, height: int) -> dict[str, int]:
    for step in (1, 2, 3):
        progress(step, 3, f"step {step} of 3")
    return {"width": width, "height": height}


@app.task
def explode(reason: str) -> None:
    raise ValueError(reason)


@app.task(bind=True, max_retries=3)
def flaky(self: Task, failures: int) -> int:
    if self.request.retries < failures:
        raise self.retry(exc=OSError("not yet"), countdown=0)
    return int(self.request.retries)


@app.task
def stamp() -> datetime.date:
    return datetime.date(2024, 5, 17)  # not JSON: recorded as its repr


@app.task
def hold(path: str) -> int:
    """Run until ``path`` exists (what a test releases); the process id."""
    Path(path + ".pid").write_text(str(os.getpid()))
    while not Path(path).exists():
        time.sleep(0.02)
    return os.getpid()
