"""A service built before a fork (``gunicorn --preload``), used in the child."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobstatus_core.errors import OPENED_BEFORE_FORK

from .helpers import free_port, wait_for

pytestmark = pytest.mark.hosts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HEADERS = {"x-api-key": "fork-key", "content-type": "application/json"}


@pytest.fixture
def preloaded(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, int]]:
    """The Flask example under gunicorn --preload: built once, then forked."""
    port = free_port()
    env = {**os.environ, "API_KEY": "fork-key", "JOBSTATUS_STORE": request.param}
    where = ["--bind", f"127.0.0.1:{port}", "--chdir", str(EXAMPLES), "flask_app:app"]
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", *where],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None
        try:
            httpx.get(url + "/hello", timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_for(answering, 30)
    yield url, process.pid
    process.terminate()
    process.wait(30)


@pytest.mark.parametrize("preloaded", ["memory://"], indirect=True)
def test_pid_is_the_workers_not_the_preloading_masters(
    preloaded: tuple[str, int],
) -> None:
    url, master = preloaded
    answers = [
        httpx.post(url + "/jobs-api/v1/toolkit/jobs/status", headers=HEADERS).json()
        for _ in range(10)
    ]
    assert all(answer["code"] == 200 for answer in answers)
    pids = {answer["pid"] for answer in answers}
    assert master not in pids
    for pid in pids:
        assert parent_of(pid) == master


@pytest.mark.parametrize("preloaded", ["sqlite:jobs.db"], indirect=True)
def test_a_store_that_cannot_cross_a_fork_is_refused_with_the_fix(
    preloaded: tuple[str, int],
) -> None:
    url, _ = preloaded
    answer = httpx.post(
        url + "/jobs-api/v1/toolkit/job/status", json={"job_id": "a"}, headers=HEADERS
    )
    assert answer.status_code == 500
    assert (
        answer.json()["message"]
        == f"Failed to retrieve job status: {OPENED_BEFORE_FORK}"
    )


def parent_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])
