"""The JSON envelope every answer is wrapped in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .types import RequestId


@dataclass(frozen=True)
class Host:
    """Envelope fields the host supplies: who is serving."""

    pid: int
    build_number: str
    #: Default (None): the pid, an integer fixed for the life of the process.
    queue_id: int | str | None = None
    queue_length: Callable[[], int] = lambda: 0


def envelope(
    *,
    host: Host,
    endpoint: str,
    code: int,
    request_id: RequestId,
    job_id: str,
    response: Any,
    message: str,
    elapsed: float,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "endpoint": endpoint,
        "code": code,
        "id": request_id,
        "job_id": job_id,
        "response": response,
        "message": message,
        "pid": host.pid,
        "queue_id": host.pid if host.queue_id is None else host.queue_id,
        "run_time": round(elapsed, 3),
        "queue_time": 0,
        "total_time": round(elapsed, 3),
        "queue_length": host.queue_length(),
        "build_number": host.build_number,
    }
    if code != 200:
        body["error"] = message
    return body
