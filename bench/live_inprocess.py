"""The server of bench/live.py's in-process rows, one per process.

    python bench/live_inprocess.py PORT

The jobstatus app on ``memory://``, served as ``jobstatus serve`` serves it
(uvicorn, the same loop and HTTP parser), with one route of its own:
``POST /bench/STATE/JOB_ID`` records STATE (``running`` or ``done``) for the
job in this process — the change reaches the streams through the memory
store's in-process notification, with no other process or network hop — and
answers the ``time.monotonic()`` taken right before it was recorded (the
clock is system-wide on Linux, so the subscribers' arrival times compare
with it).
"""

from __future__ import annotations

import sys
import time

from live import KEY
from starlette.types import Receive, Scope, Send

from jobstatus_adapters import make_service
from jobstatus_adapters.serverstack import server_stack
from jobstatus_adapters.starlette import create_app
from jobstatus_backends.memory import MemoryStore
from jobstatus_backends.recorder import Recorder

PREFIX = "/bench/"


def main(port: int) -> None:
    import uvicorn

    store = MemoryStore()
    recorder = Recorder(store)
    recorder.running("probe")
    app = create_app(
        make_service(store, api_keys=[KEY], max_waiters=5000, max_streams=5000)
    )

    async def bench_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await app(scope, receive, send)
            return
        state, job_id = scope["path"].removeprefix(PREFIX).split("/")
        changed = time.monotonic()
        if state == "done":
            recorder.done(job_id)
        else:
            recorder.running(job_id)
        body = repr(changed).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    stack = server_stack()
    uvicorn.run(
        bench_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop=stack.loop,
        http=stack.protocol(),
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
