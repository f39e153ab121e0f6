"""Starting a server process on a free loopback port, for the benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    argv: Callable[[int], list[str]],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``python <argv(port)>`` and wait until it answers; (process, base URL)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *argv(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.post(base + "/", timeout=1)
            return process, base
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{argv(port)} did not start") from None
            time.sleep(0.1)
