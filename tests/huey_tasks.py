"""Tasks the Huey tests enqueue and a real ``huey_consumer`` runs.

Settings come from the environment (tests/queue_workers.task_env), so the
test process and the consumers build the same Huey app.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from huey import RedisHuey

from jobstatus_adapters.huey import install, progress
from tests.awkward import BadStr, NoRepr

huey = RedisHuey("jobstatus-tests", url=os.environ["JOBSTATUS_TEST_REDIS"])
recording = install(huey, os.environ["JOBSTATUS_STORE"])
GATES = Path(os.environ["JOBSTATUS_TEST_GATES"])


@huey.task()
def add(a: int, b: int) -> int:
    progress(1, 2, "adding")
    return a + b


@huey.task()
def fail(message: str) -> None:
    raise ValueError(message)


@huey.task(retries=1)
def flaky(name: str) -> str:
    # Fails the first time only: the marker file remembers across attempts.
    marker = GATES / f"{name}.tried"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("the first attempt fails")
    return "the second attempt works"


@huey.task()
def odd() -> set[int]:
    return {1, 2}


@huey.task()
def hold(name: str) -> int:
    """Runs until the test opens its gate (a file); returns the consumer's pid."""
    progress(0, 1, f"held by {os.getpid()}")
    gate = GATES / name
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        gate.exists() or (GATES / "all").exists()
    ):
        time.sleep(0.01)
    return os.getpid()


@huey.task()
def bad_str() -> None:
    raise BadStr()


@huey.task()
def no_repr() -> NoRepr:
    return NoRepr()


@huey.task()
def huge() -> int:
    return 10**5000  # past Python's 4,300 digits for an int as text
