"""Reads shared by the calls of one store-thread batch (``batchreads``)."""

from __future__ import annotations

import threading

import pytest

from jobstatus_core import batchreads

pytestmark = pytest.mark.core


class Counter:
    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.reads


def test_outside_a_batch_every_call_reads() -> None:
    read = Counter()
    owner = object()
    assert [batchreads.shared(owner, "k", read) for _ in range(3)] == [1, 2, 3]


def test_inside_a_batch_one_read_per_owner_and_key() -> None:
    read = Counter()
    one, other = object(), object()
    with batchreads.batch():
        assert batchreads.shared(one, "k", read) == 1
        assert batchreads.shared(one, "k", read) == 1
        assert batchreads.shared(one, "j", read) == 2
        assert batchreads.shared(other, "k", read) == 3
    assert read.reads == 3


def test_a_batch_never_sees_the_values_of_the_one_before() -> None:
    read = Counter()
    owner = object()
    with batchreads.batch():
        assert batchreads.shared(owner, "k", read) == 1
    with batchreads.batch():
        assert batchreads.shared(owner, "k", read) == 2
    assert batchreads.shared(owner, "k", read) == 3


def test_forget_drops_what_the_batch_read() -> None:
    read = Counter()
    owner = object()
    with batchreads.batch():
        assert batchreads.shared(owner, "k", read) == 1
        batchreads.forget()
        assert batchreads.shared(owner, "k", read) == 2
        assert batchreads.shared(owner, "k", read) == 2
    batchreads.forget()  # outside a batch: nothing to drop, no error


def test_a_read_that_raises_is_not_kept() -> None:
    owner = object()
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("down")
        return "up"

    with batchreads.batch():
        with pytest.raises(OSError):
            batchreads.shared(owner, "k", flaky)
        assert batchreads.shared(owner, "k", flaky) == "up"
        assert batchreads.shared(owner, "k", flaky) == "up"
    assert calls == 2


def test_another_threads_batch_is_its_own() -> None:
    owner = object()
    inside, other_done = threading.Event(), threading.Event()
    seen: list[str] = []

    def other_thread() -> None:
        inside.wait(5)
        # This thread runs no batch: it reads, and does not see the value
        # the main thread's batch keeps.
        seen.append(batchreads.shared(owner, "k", lambda: "other"))
        with batchreads.batch():
            seen.append(batchreads.shared(owner, "k", lambda: "other batch"))
        other_done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with batchreads.batch():
        assert batchreads.shared(owner, "k", lambda: "main") == "main"
        inside.set()
        assert other_done.wait(5)
        assert batchreads.shared(owner, "k", lambda: "again") == "main"
    thread.join(5)
    assert seen == ["other", "other batch"]


def test_a_value_keep_refuses_is_read_again() -> None:
    read = Counter()
    owner = object()
    with batchreads.batch():
        values = [
            batchreads.shared(owner, "k", read, keep=lambda n: n % 2 == 0)
            for _ in range(3)
        ]
    # 1 (odd: not kept), 2 (kept), then 2 again
    assert values == [1, 2, 2]
