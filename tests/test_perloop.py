"""PerLoop: one client per event loop, closed with its loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jobstatus_backends.perloop import PerLoop

pytestmark = pytest.mark.core


class Client:
    def __init__(self) -> None:
        self.closed = 0


async def close(client: Client) -> None:
    await asyncio.sleep(0)  # closing awaits, as a real client's does
    client.closed += 1


def test_one_client_per_loop_closed_when_its_loop_shuts_down() -> None:
    made: list[Client] = []

    def make() -> Client:
        made.append(Client())
        return made[-1]

    loops = PerLoop(make, close)

    async def twice() -> tuple[Client, Client]:
        first = await loops.get()
        both = await asyncio.gather(loops.get(), loops.get())
        assert both[0] is both[1] is first
        return first, await loops.get()

    first, again = asyncio.run(twice())
    assert first is again and first.closed == 1
    # A second loop makes its own; the first loop, closed, is dropped.
    second, _ = asyncio.run(twice())
    assert second is not first and len(made) == 2 and second.closed == 1
    assert len(loops) == 1


def test_close_closes_the_client_of_a_running_loop_once() -> None:
    loops = PerLoop(Client, close)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        client = asyncio.run_coroutine_threadsafe(loops.get(), loop).result(5)
        loops.close()
        assert len(loops) == 0
        # The close ran on the client's loop; a no-op round trip after it.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01), loop).result(5)
        assert client.closed == 1
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert client.closed == 1  # not again when the loop shut down
