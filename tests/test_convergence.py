"""A client watching through a server that is killed and restarted twice
while writers in other processes record random changes (SPEC §11): at the
end the client's view is the store's, with no change skipped."""

from __future__ import annotations

import itertools
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from jobstatus_adapters.client import JobStatusClient
from jobstatus_backends import store_from_url

from .helpers import clean_env, free_port, wait_for
from .test_recording_processes import write

KEY = "converge-key"


def serve(port: int, store_url: str, cwd: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobstatus_adapters.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=cwd,
        env=clean_env(API_KEY=KEY, JOBSTATUS_STORE=store_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answering() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/jobs", timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_for(answering, 30)
    return process


def _write(args: tuple[str, int]) -> object:
    return write(*args)


def test_the_watchers_view_converges_on_the_store(
    shared_store_url: str, tmp_path: Path
) -> None:
    port = free_port()
    server = serve(port, shared_store_url, tmp_path)
    seen: dict[str, str] = {}  # job -> version, applied in order
    log: list[tuple[str, str]] = []
    stop = threading.Event()
    client = JobStatusClient(
        f"http://127.0.0.1:{port}", api_key=KEY, retries=None, backoff=0.1
    )

    def watch() -> None:
        for change in client.watch():
            log.append((change.job_id, change.data["version"]))
            seen[change.job_id] = change.data["version"]
            if stop.is_set():
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        writing = pool.map_async(_write, [(shared_store_url, s) for s in (11, 12)])
        for _ in range(2):  # killed and restarted twice, mid-run
            time.sleep(0.7)
            server.send_signal(signal.SIGKILL)
            server.wait()
            time.sleep(0.3)
            server = serve(port, shared_store_url, tmp_path)
        writing.get(120)
    store = store_from_url(shared_store_url)
    try:
        final = {
            job_id: row.version
            for job_id, row in store.read_many([f"job-{i}" for i in range(6)]).items()
        }

        def converged() -> bool:
            return all(seen.get(job_id) == version for job_id, version in final.items())

        wait_for(converged, 30)
    finally:
        stop.set()
        store.put({"job_id": "wake-the-watcher", "job_status": "done"})
        watcher.join(10)
        store.close()
        server.terminate()
        server.wait(10)
        client.close()
    # No change came twice in a row.
    assert all(a != b for a, b in itertools.pairwise(log)), log
