"""The Starlette adapter's store threads: batching, errors, idleness, trio."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import anyio
import pytest
import trio  # noqa: F401 - the backend anyio runs below

from jobstatus_adapters.offload import THREAD_NAME, StoreThreads
from jobstatus_core import batchreads

pytestmark = pytest.mark.core


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_calls_of_one_loop_iteration_share_one_hop(loop: str) -> None:
    threads = StoreThreads()
    seen: list[tuple[int, int]] = []  # (call, worker thread)
    gate = threading.Event()

    def call(n: int) -> int:
        gate.wait(5)
        seen.append((n, threading.get_ident()))
        return n * n

    async def main() -> list[int]:
        tasks = [
            asyncio.ensure_future(threads.run(lambda n=n: call(n))) for n in range(20)
        ]
        await asyncio.sleep(0)  # the tasks all reach run() in this iteration
        gate.set()
        return list(await asyncio.gather(*tasks))

    if loop == "uvloop":
        import uvloop

        answers = uvloop.run(main())
    else:
        answers = asyncio.run(main())
    assert answers == [n * n for n in range(20)]
    assert [n for n, _ in seen] == list(range(20)), "one batch, in order"
    assert len({worker for _, worker in seen}) == 1
    assert threading.get_ident() not in {worker for _, worker in seen}


def test_an_error_reaches_only_its_own_caller() -> None:
    threads = StoreThreads()

    def fail() -> int:
        raise KeyError("boom")

    async def main() -> list[object]:
        return await asyncio.gather(
            threads.run(lambda: 1),
            threads.run(fail),
            threads.run(lambda: 3),
            return_exceptions=True,
        )

    first, error, third = asyncio.run(main())
    assert (first, third) == (1, 3)
    assert isinstance(error, KeyError)


def test_a_slow_batch_does_not_hold_up_the_next() -> None:
    threads = StoreThreads(max_workers=2)
    release = threading.Event()

    async def main() -> float:
        slow = asyncio.ensure_future(threads.run(lambda: release.wait(5)))
        await asyncio.sleep(0.05)  # the slow batch is on its worker
        started = time.monotonic()
        assert await threads.run(lambda: "fast") == "fast"
        took = time.monotonic() - started
        release.set()
        assert await slow is True
        return took

    assert asyncio.run(main()) < 2.0, "the second batch waited for the first"


def test_a_cancelled_caller_leaves_the_others_their_answers() -> None:
    threads = StoreThreads()
    gate = threading.Event()

    async def main() -> int:
        gone = asyncio.ensure_future(threads.run(lambda: gate.wait(5)))
        kept = asyncio.ensure_future(threads.run(lambda: 7))
        await asyncio.sleep(0)
        gone.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(main()) == 7


def test_a_loop_that_stopped_mid_batch_leaves_no_stale_batch() -> None:
    threads = StoreThreads()
    dead = asyncio.new_event_loop()
    abandoned = dead.create_task(threads.run(lambda: 1))
    dead.call_soon(dead.stop)  # after the task's first step, before the send
    dead.run_forever()
    dead.close()
    assert not abandoned.done()  # its batch was never sent

    async def main() -> int:
        return await asyncio.wait_for(threads.run(lambda: 2), 5)

    assert asyncio.run(main()) == 2  # the next loop of this thread is served


def test_idle_workers_exit() -> None:
    threads = StoreThreads(idle_seconds=0.1)
    # Workers of other instances (earlier tests') may exit meanwhile: a
    # count of every store thread proves nothing, this instance's worker does.
    old = set(store_threads())

    async def main() -> int:
        return await threads.run(lambda: 1)

    async def worker() -> threading.Thread:
        return await threads.run(threading.current_thread)

    # The worker that ran the call, taken by the call itself: an idle one may
    # already be gone when a busy machine gets back to this thread, and
    # another test's workers may start or exit meanwhile.
    ran_on = asyncio.run(worker())
    assert ran_on.name == THREAD_NAME and ran_on not in old
    deadline = time.monotonic() + 10
    while ran_on.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ran_on.is_alive()
    assert threads._workers == 0  # none of this instance's workers is left
    # and a new call starts a worker again
    assert asyncio.run(main()) == 1


def test_trio_uses_anyio_threads() -> None:
    threads = StoreThreads()

    async def main() -> str:
        return await threads.run(lambda: threading.current_thread().name)

    name = anyio.run(main, backend="trio")
    assert name != threading.current_thread().name
    assert name != THREAD_NAME


def test_a_loop_that_stopped_before_sending_still_gets_its_answer() -> None:
    """Two loops taking turns on one thread: the first stops with its batch
    gathered, the second runs a whole batch meanwhile; the first batch is
    still sent, and answered, when the first loop runs again."""
    threads = StoreThreads()

    async def ask(tag: str) -> str:
        return await threads.run(lambda: tag)

    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        waiting = first.create_task(ask("a"))
        first.call_soon(first.stop)
        first.run_forever()  # "a" gathered, its batch not sent yet
        assert second.run_until_complete(ask("b")) == "b"
        assert first.run_until_complete(asyncio.wait_for(waiting, 5)) == "a"
    finally:
        first.close()
        second.close()


def test_no_call_joins_a_batch_already_sent() -> None:
    """A loop stopped with its batch gathered, then run for a moment on
    another thread (which sends the batch): a call asked afterwards on the
    first thread goes into a batch of its own, never into the one sent."""
    threads = StoreThreads()
    gate = threading.Event()
    # Which batch a call ran in is seen through batchreads: a value shared
    # within a batch is never seen by a call of another batch.
    owner = object()
    value = ["before"]

    def read() -> str:
        return batchreads.shared(owner, "v", lambda: value[0])

    def slow() -> str:
        gate.wait(5)
        return "slow"

    async def ask(work: Callable[[], str]) -> str:
        return await threads.run(work)

    loop = asyncio.new_event_loop()
    try:
        first = loop.create_task(ask(read))
        held = loop.create_task(ask(slow))
        loop.call_soon(loop.stop)
        loop.run_forever()  # the batch (read, slow) gathered, not sent

        def elsewhere() -> None:
            loop.call_later(0.2, loop.stop)
            loop.run_forever()  # sends the batch from this thread

        other = threading.Thread(target=elsewhere)
        other.start()
        other.join(5)
        value[0] = "after"  # a write, then a call asked on the first thread
        later = loop.run_until_complete(asyncio.wait_for(ask(read), 5))
        gate.set()
        assert later == "after"
        assert loop.run_until_complete(asyncio.gather(first, held)) == [
            "before",
            "slow",
        ]
    finally:
        gate.set()
        loop.close()
