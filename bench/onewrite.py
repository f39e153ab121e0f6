"""A response's head and body in one write against two: the writer's CPU.

Run by hand (not a test):
    python bench/onewrite.py [--responses 20000] [--repeat 6]

On a loopback TCP connection drained by another process, the writing
process writes a 128-byte head and a body, as uvicorn writes a response,
then lets the loop turn, over and over: once straight to the loop's
transport (uvicorn alone), once through ``TurnWrites`` (`jobstatus serve`),
in alternating rounds, on uvloop and on asyncio's own loop. It prints the
writer's CPU time (user + system, from getrusage) per response, medians of
the rounds, and the ratio of the two within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable

import uvloop

from jobstatus_adapters.turnwrites import TurnWrites

HEAD = b"h" * 128
#: A `job/status` answer's body, and a `jobs/status` one with ~1,000 matches.
BODIES = {"448 B": 448, "33,272 B": 33_272}
#: The other process: reads all it is sent.
DRAIN = (
    "import socket, sys\n"
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
    "while s.recv(1 << 20): pass"
)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(size: int, responses: int, repeat: int) -> dict[str, list[float]]:
    """µs of CPU per response, per round, straight and through TurnWrites."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader = subprocess.Popen([sys.executable, "-c", DRAIN, str(port)])
    transport = await accepted
    body = b"b" * size
    rounds: dict[str, list[float]] = {"two writes": [], "one write": []}
    for _ in range(repeat):
        for name in rounds:
            writer = transport if name == "two writes" else TurnWrites(transport)
            before = cpu_seconds()
            for _ in range(responses):
                writer.write(HEAD)
                writer.write(body)
                await asyncio.sleep(0)  # the turn ends, as a response's does
                while transport.get_write_buffer_size():
                    await asyncio.sleep(0.0005)  # the reader catches up
            rounds[name].append((cpu_seconds() - before) / responses * 1e6)
    transport.close()
    server.close()
    await asyncio.sleep(0.1)
    reader.kill()
    reader.wait()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args()
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "uvloop": uvloop.new_event_loop,
        "asyncio": asyncio.new_event_loop,
    }
    print(
        f"{args.responses:,} responses a round, medians of {args.repeat}"
        " alternating rounds; the writer's CPU per response"
    )
    print()
    print("| loop | body | two writes | one write | one / two |")
    print("|---|---:|---:|---:|---:|")
    for loop_name, new_loop in loops.items():
        for label, size in BODIES.items():
            loop = new_loop()
            try:
                rounds = loop.run_until_complete(
                    measure(size, args.responses, args.repeat)
                )
            finally:
                loop.close()
            two, one = rounds["two writes"], rounds["one write"]
            gain = statistics.median(o / t for o, t in zip(one, two, strict=True))
            print(
                f"| {loop_name} | {label} | {statistics.median(two):.2f} µs"
                f" | {statistics.median(one):.2f} µs | {gain:.2f} |"
            )


if __name__ == "__main__":
    main()
