"""What one Redis round trip costs the client: redis.asyncio's command,
the same bytes sent and read on one of its connections, and the store's
own pipe (backends/redispipe.py).

Run by hand (not a test):  python bench/redis_roundtrip.py [--calls 5000] [--rounds 5]

Starts a redis-server of its own (no persistence) on a free port, sets one
key to a Toolkit-sized record, then on uvloop, one call at a time and
``--concurrency`` at once (16 as the HTTP benches' connections):

- ``client``: ``await client.get(key)``, as the Redis store's reads on the
  event loop send it (pool, retry, response callbacks and all);
- ``connection``: ``send_packed_command`` and ``read_response`` on a
  connection taken from the same client's pool: the protocol alone;
- ``pipe``: ``Pipe.call("GET", key)``, as the Redis store's reads on the
  event loop send it now.

The table gives the median over rounds of this process's CPU time per call
and of the wall time per call, and the CPU's ratio to the client's. (The
connection is one: it has no row for more than one call at a time.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

import redis.asyncio as aredis
import uvloop
from redis_client import timed
from redis_expiry import start_redis

from jobstatus_backends.redispipe import Address, Pipe

RECORD = '{"job_id": "j", "job_status": "done", "response": "' + "x" * 380 + '"}'


async def measure(url: str, calls: int, rounds: int, concurrency: list[int]) -> None:
    client = aredis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    await client.set("j", RECORD)
    connection = await client.connection_pool.get_connection()
    packed = connection.pack_command("GET", "j")

    async def by_client() -> Any:
        return await client.get("j")

    async def by_connection() -> Any:
        await connection.send_packed_command(packed, check_health=False)
        return await connection.read_response()

    address = Address.of(client.connection_pool, 5.0)
    assert address is not None
    pipe = Pipe(address)

    async def by_pipe() -> Any:
        return await pipe.call("GET", "j")

    ways = {"client": by_client, "connection": by_connection, "pipe": by_pipe}
    for way in ways.values():
        assert await way() == RECORD
    print(f"{calls:,} GETs of a {len(RECORD)}-byte value, median of {rounds} rounds")
    print()
    print("| way | at once | CPU/call | wall/call | CPU vs client |")
    print("|---|---:|---:|---:|---:|")
    for at_once in concurrency:
        results: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
        for _ in range(rounds):
            for name, way in ways.items():
                if name == "connection" and at_once > 1:
                    continue  # one connection: one command at a time
                results[name].append(await timed(way, calls, at_once))
        cpu = {
            way: statistics.median(r[0] for r in runs)
            for way, runs in results.items()
            if runs
        }
        wall = {
            way: statistics.median(r[1] for r in runs)
            for way, runs in results.items()
            if runs
        }
        for way in cpu:
            print(
                f"| {way} | {at_once} | {cpu[way]:.1f} µs | {wall[way]:.1f} µs"
                f" | {cpu[way] / cpu['client']:.2f} |"
            )
    pipe.close()
    await client.connection_pool.release(connection)
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--concurrency", default="1,16", help="calls at once, each a row (1,16)"
    )
    args = parser.parse_args()
    concurrency = [int(n) for n in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="jobstatus-redis-") as tmp:
        server, url = start_redis(tmp)
        try:
            uvloop.run(measure(url, args.calls, args.rounds, concurrency))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
