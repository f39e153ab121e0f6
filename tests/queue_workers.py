"""What the queue tests share: a real worker process, the environment its
task module reads, and reading a job from the store or through the live
endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from jobstatus_core import Record, Store

from .helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def task_env(redis_url: str, store_url: str, gates: Path) -> dict[str, str]:
    """The settings a tests/<queue>_tasks.py module reads when imported."""
    return {
        "JOBSTATUS_TEST_REDIS": redis_url,
        "JOBSTATUS_STORE": store_url,
        "JOBSTATUS_TEST_GATES": str(gates),
    }


class Worker:
    """A queue's own worker command, run as a process of its own."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                cwd=cwd,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> str:
        """Stop it the way an operator does (SIGTERM); its output."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.log.read_text(errors="replace")


def record_of(store: Store, job_id: str) -> Record:
    found = store.get(job_id)
    assert found is not None, job_id
    return found


def status_of(store: Store, job_id: str) -> Any:
    return (store.get(job_id) or {}).get("job_status")


def reaches(store: Store, job_id: str, status: str, timeout: float = 30) -> Record:
    """The job's record once it has ``status``, read from ``store``."""
    wait_for(lambda: status_of(store, job_id) == status, timeout)
    return record_of(store, job_id)


def finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it has a terminal status, waited for through the
    endpoint (``?wait=``), never by sleeping."""
    for _ in range(10):
        body = http.get(f"/v1/job/{job_id}", params={"wait": 10}, timeout=20).json()
        if body.get("waited", {}).get("met"):
            record: dict[str, Any] = body["response"]
            return record
    raise AssertionError(f"job {job_id} did not finish: {body}")


def run_example(
    name: str,
    send: list[str],
    worker_args: list[str],
    env: dict[str, str],
    where: Path,
) -> tuple[str, Worker]:
    """Sends one task of examples/<name>.py as its docstring says (``send``
    prints the job id), and starts the queue's worker on it."""
    sent = subprocess.run(
        [sys.executable, *send],
        cwd=EXAMPLES,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    worker = Worker(worker_args, env, where / f"{name}.log", cwd=EXAMPLES)
    return sent.stdout.strip(), worker
