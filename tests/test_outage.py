"""A store's server that stopped answering: refused at once, tried again by
one call at a time (``backends/outage.py``); a listener that cannot start."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from jobstatus_backends.outage import FAILURES_IN_A_ROW, Outage, Unreachable
from jobstatus_core import StoreError, StoreUnavailable

from .helpers import Clock


def fail(outage: Outage, error: Exception) -> None:
    with pytest.raises(type(error)), outage.call():
        raise error


def refused_at_once(outage: Outage) -> bool:
    reached = False
    try:
        with outage.call():
            reached = True
    except StoreUnavailable:
        return not reached
    return False


def test_failures_in_a_row_refuse_calls_until_one_tries_again() -> None:
    clock = Clock(0.0)
    outage = Outage(1.0, clock)
    for _ in range(FAILURES_IN_A_ROW - 1):
        fail(outage, Unreachable("Redis unreachable: TimeoutError"))
    assert not refused_at_once(outage)  # and it answered: the count restarts
    for _ in range(FAILURES_IN_A_ROW):
        fail(outage, Unreachable("Redis unreachable: TimeoutError"))
    assert refused_at_once(outage)
    with pytest.raises(StoreUnavailable, match="Redis unreachable: TimeoutError"):
        outage.call().__enter__()
    clock.now = 1.0
    # One call tries again; meanwhile the others are still refused.
    trying = threading.Event()
    release = threading.Event()

    def trial() -> None:
        with outage.call():
            trying.set()
            release.wait(10)

    thread = threading.Thread(target=trial)
    thread.start()
    assert trying.wait(10)
    assert refused_at_once(outage)
    release.set()
    thread.join(10)
    # Its answer ended the outage.
    assert not refused_at_once(outage)


def test_a_failed_try_refuses_for_another_wait() -> None:
    clock = Clock(0.0)
    outage = Outage(1.0, clock)
    for _ in range(FAILURES_IN_A_ROW):
        fail(outage, Unreachable("down"))
    clock.now = 1.5
    fail(outage, Unreachable("still down"))
    clock.now = 2.0
    assert refused_at_once(outage)
    clock.now = 2.5
    assert not refused_at_once(outage)


def test_what_the_server_answered_is_no_outage() -> None:
    """An error it answered, or a statement it cancelled at its timeout:
    the server is there."""
    outage = Outage(1.0, Clock(0.0))
    for answer in (StoreError("Redis error: WRONGTYPE"), StoreUnavailable("timed out")):
        for _ in range(2 * FAILURES_IN_A_ROW):
            for _ in range(FAILURES_IN_A_ROW - 1):
                fail(outage, Unreachable("slow"))
            fail(outage, answer)
        assert not refused_at_once(outage)


def test_a_listener_that_cannot_start_keeps_no_callback() -> None:
    from jobstatus_backends.subscribers import Subscribers

    def no_thread(notify: object) -> Any:
        raise OSError(24, "Too many open files")

    subscribers = Subscribers(no_thread, timeout=0.1)
    called: list[int] = []
    with pytest.raises(OSError):
        subscribers.add(lambda: called.append(1))
    subscribers.notify()
    assert called == []
