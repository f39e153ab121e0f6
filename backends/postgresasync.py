"""The PostgreSQL store's reads from an event loop, on psycopg's asyncio side.

On the loop a store read cannot wait for its round trip; it raises
``WouldBlock`` naming a fetch (``nowait``), the Starlette adapter awaits the
fetch here and tries the read again with its rows. Each loop has a pool of
its own (``PerLoop``): psycopg's asyncio connections belong to their loop.
Measured against the sync pool on threads (bench/postgres_client.py).
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool

from .perloop import PerLoop


class LoopPool:
    """One loop's pool, opened by its first fetch."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self.opened = False


class AsyncPools:
    """An ``AsyncConnectionPool`` per event loop, set up as the store's own
    sync pool is (autocommit, the same limits, idle connections checked)."""

    def __init__(
        self, conninfo: str, *, max_size: int, timeout: float, name: str
    ) -> None:
        def make() -> LoopPool:
            return LoopPool(
                psycopg_pool.AsyncConnectionPool(
                    conninfo,
                    kwargs={"autocommit": True},
                    min_size=1,
                    max_size=max_size,
                    open=False,
                    timeout=timeout,
                    check=_check_idle,
                    name=name,
                )
            )

        self._loops = PerLoop(make, _closed)

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one statement, on the running loop's pool."""
        loop_pool = await self._loops.get()
        if not loop_pool.opened:
            await loop_pool.pool.open()  # idempotent: tasks may race here
            loop_pool.opened = True
        async with loop_pool.pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            rows: list[tuple[Any, ...]] = await cursor.fetchall()
            return rows

    def close(self) -> None:
        self._loops.close()


async def _check_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """As the sync pool's check: a round trip only for a connection with
    something to read while idle (the server closed it, say)."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


async def _closed(loop_pool: LoopPool) -> None:
    await loop_pool.pool.close()
