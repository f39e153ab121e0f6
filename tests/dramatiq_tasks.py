"""Actors the Dramatiq tests send and a real ``dramatiq`` worker runs.

Settings come from the environment (tests/queue_workers.task_env), so the
test process and the worker build the same broker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from jobstatus_adapters.dramatiq import install, progress
from tests.awkward import BadStr, NoRepr

broker = RedisBroker(url=os.environ["JOBSTATUS_TEST_REDIS"])
dramatiq.set_broker(broker)
recording = install(broker, os.environ["JOBSTATUS_STORE"])
GATES = Path(os.environ["JOBSTATUS_TEST_GATES"])


@dramatiq.actor(max_retries=0)
def add(a: int, b: int) -> int:
    progress(1, 2, "adding")
    return a + b


@dramatiq.actor(max_retries=0)
def fail(message: str) -> None:
    raise ValueError(message)


@dramatiq.actor(max_retries=1, min_backoff=1, max_backoff=1)
def flaky(name: str) -> str:
    # Fails the first time only: the marker file remembers across attempts.
    marker = GATES / f"{name}.tried"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("the first attempt fails")
    return "the second attempt works"


@dramatiq.actor(max_retries=0)
def odd() -> set[int]:
    return {1, 2}


@dramatiq.actor(max_retries=0)
def hold(name: str) -> int:
    """Runs until the test opens its gate (a file); returns the worker's pid."""
    progress(0, 1, f"held by {os.getpid()}")
    gate = GATES / name
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        gate.exists() or (GATES / "all").exists()
    ):
        time.sleep(0.01)
    return os.getpid()


@dramatiq.actor(max_retries=0)
def bad_str() -> None:
    raise BadStr()


@dramatiq.actor(max_retries=0)
def no_repr() -> NoRepr:
    return NoRepr()


@dramatiq.actor(max_retries=0)
def huge() -> int:
    return 10**5000  # past Python's 4,300 digits for an int as text
