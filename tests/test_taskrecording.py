"""The queue adapters' recorder across a fork: RQ forks a work horse per job."""

from __future__ import annotations

import os

from jobstatus_adapters.taskrecording import TaskRecorder, response_of
from jobstatus_backends import store_from_url
from jobstatus_core import ForkSafe
from jobstatus_core.protocol import MAX_RECORD_DEPTH, checked_job_id


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


def test_a_response_no_record_could_hold_is_recorded_as_its_repr() -> None:
    """A task's end is recorded whatever it returned: JSON nested deeper
    than a record takes below its response, or so deep that repr() itself
    fails, is kept as a repr, as what is not JSON is."""

    def nested(levels: int) -> object:
        value: object = 1
        for _ in range(levels):
            value = [value]
        return value

    fits = nested(MAX_RECORD_DEPTH - 1)
    assert response_of(fits) == fits
    assert checked_job_id({"job_id": "j", "job_status": "done", "response": fits})
    deeper = response_of(nested(MAX_RECORD_DEPTH))
    assert deeper["type"] == "builtins.list" and deeper["repr"].startswith("[[[")
    far = response_of(nested(100_000))
    assert far == {"repr": "<list nested too deep to show>", "type": "builtins.list"}
    for shown in (deeper, far):
        checked_job_id({"job_id": "j", "job_status": "done", "response": shown})
