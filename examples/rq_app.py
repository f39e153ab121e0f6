"""An RQ queue whose job states the jobstatus endpoints answer.

    JOBSTATUS_STORE=sqlite:jobs.db rq worker -w jobstatus_adapters.rq.RecordingWorker

Publishers enqueue through ``queue`` (``queued`` is recorded there); the
worker records the rest.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

from redis import Redis
from rq import Queue, Retry

from jobstatus_adapters.rq import install, progress

redis = Redis.from_url(os.environ.get("RQ_REDIS_URL", "redis://127.0.0.1:6379/0"))
queue = install(
    Queue(os.environ.get("RQ_QUEUE", "default"), connection=redis),
    os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"),
)


def resize(width: int, height: int) -> dict[str, int]:
    for step in (1, 2, 3):
        progress(step, 3, f"step {step} of 3")
    return {"width": width, "height": height}


def explode(reason: str) -> None:
    raise ValueError(reason)


def flaky(path: str, failures: int) -> int:
    """Fail the first ``failures`` runs (counted in ``path``)."""
    runs = Path(path)
    with runs.open("a") as log:
        log.write("run\n")
    count = len(runs.read_text().splitlines())
    if count <= failures:
        raise OSError("not yet")
    return count


def stamp() -> datetime.date:
    return datetime.date(2024, 5, 17)  # not JSON: recorded as its repr


def hold(path: str, report: bool = False) -> int:
    """Run until ``path`` exists (what a test releases); the process id.
    With ``report``, it reports progress first."""
    if report:
        progress(0, None, "holding")
    Path(path + ".pid").write_text(str(os.getpid()))
    while not Path(path).exists():
        time.sleep(0.02)
    return os.getpid()


class Receipt(Exception):
    """Returned, not raised: it pickles, but does not unpickle (its
    ``__init__`` takes two arguments where ``args`` holds one)."""

    def __init__(self, order: str, total: int) -> None:
        super().__init__(f"{order}: {total}")


def receipt(order: str, total: int) -> Receipt:
    return Receipt(order, total)


def again() -> Retry:
    """Ask RQ to run it again, every time (``max`` runs past the first)."""
    return Retry(max=1)
