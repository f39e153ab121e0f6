"""What one Redis round trip costs the client: redis.asyncio's command
against the same bytes sent and read on one of its connections.

Run by hand (not a test):  python bench/redis_roundtrip.py [--calls 5000] [--rounds 5]

Starts a redis-server of its own (no persistence) on a free port, sets one
key to a Toolkit-sized record, then on uvloop, one call at a time:

- ``client``: ``await client.get(key)``, as the Redis store's reads on the
  event loop send it (pool, retry, response callbacks and all);
- ``connection``: ``send_packed_command`` and ``read_response`` on a
  connection taken from the same client's pool: the protocol alone.

The table gives the median over rounds of this process's CPU time per call
and of the wall time per call, and the ratio connection/client.
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

RECORD = '{"job_id": "j", "job_status": "done", "response": "' + "x" * 380 + '"}'


async def measure(url: str, calls: int, rounds: int) -> None:
    client = aredis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    await client.set("j", RECORD)
    connection = await client.connection_pool.get_connection()
    packed = connection.pack_command("GET", "j")

    async def by_client() -> Any:
        return await client.get("j")

    async def by_connection() -> Any:
        await connection.send_packed_command(packed, check_health=False)
        return await connection.read_response()

    assert await by_client() == await by_connection() == RECORD
    results: dict[str, list[tuple[float, float]]] = {"client": [], "connection": []}
    for _ in range(rounds):
        results["client"].append(await timed(by_client, calls, 1))
        results["connection"].append(await timed(by_connection, calls, 1))
    await client.connection_pool.release(connection)
    await client.aclose()
    cpu = {way: statistics.median(r[0] for r in runs) for way, runs in results.items()}
    wall = {way: statistics.median(r[1] for r in runs) for way, runs in results.items()}
    print(
        f"{calls:,} GETs of a {len(RECORD)}-byte value, one at a time,"
        f" median of {rounds} rounds"
    )
    print()
    print("| way | CPU/call | wall/call |")
    print("|---|---:|---:|")
    for way in results:
        print(f"| {way} | {cpu[way]:.1f} µs | {wall[way]:.1f} µs |")
    print(
        f"| connection / client | {cpu['connection'] / cpu['client']:.2f}"
        f" | {wall['connection'] / wall['client']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobstatus-redis-") as tmp:
        server, url = start_redis(tmp)
        try:
            uvloop.run(measure(url, args.calls, args.rounds))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
