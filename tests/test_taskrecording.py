"""The queue adapters' recorder across a fork: RQ forks a work horse per job."""

from __future__ import annotations

import os

from jobstatus_adapters.taskrecording import TaskRecorder
from jobstatus_backends import store_from_url
from jobstatus_core import ForkSafe


def test_a_store_opened_before_a_fork_serves_every_child(
    shared_store_url: str,
) -> None:
    recording = TaskRecorder(shared_store_url)
    recording.open()  # in the worker, before its horses fork
    parent = recording.recorder
    kept: list[bool] = []
    for i in range(3):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                applied = recording.running(f"job-{i}", attempt=1)
                same = recording.recorder is parent
                os.write(write, f"{int(applied)}{int(same)}".encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        answer = os.read(read, 8).decode()
        os.close(read)
        assert answer[:1] == "1", f"child {i} did not record"
        kept.append(answer[1:] == "1")
    recording.close()
    # A store that survives a fork is kept (its pool reconnects); any other
    # is opened again in the child, never used across the fork.
    assert kept == [isinstance(parent.store, ForkSafe)] * 3
    store = store_from_url(shared_store_url)
    try:
        assert {f"job-{i}" for i in range(3)} <= {
            job_id for job_id, _ in store.changed_since(0)
        }
    finally:
        store.close()
