"""The queue adapters' recording at its edges: exceptions and return values
whose own code raises, failures that are not the store's, and records
larger than the file store holds. (The same cases run through real workers
in each queue's own test module.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobstatus_adapters.taskrecording import TaskRecorder, response_of
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.memory import MemoryStore
from jobstatus_backends.recorder import STR_FAILED, Recorder
from jobstatus_core import InvalidRecord, Row, StoreError
from jobstatus_core.validation import JOB_ID_RULE

from .awkward import BadStr, NoRepr

FIVE_MB = 5_000_000


def test_an_exception_whose_str_raises_is_failed_with_its_type() -> None:
    recorder = Recorder(MemoryStore())
    assert recorder.failed("j", BadStr())
    row = recorder.store.read("j")
    assert row is not None
    assert row.record["error"] == {"type": "BadStr", "message": STR_FAILED}


def test_a_value_whose_repr_raises_is_a_stand_in_repr() -> None:
    assert response_of(NoRepr()) == {
        "repr": "<NoRepr: repr() failed: ValueError: no repr>",
        "type": "tests.awkward.NoRepr",
    }
    huge = response_of(10**5000)  # past Python's 4,300 digits as text
    assert huge["type"] == "builtins.int"
    assert huge["repr"].startswith("<int: repr() failed: ValueError: Exceeds")
    assert huge["repr"].endswith(">") and len(huge["repr"]) <= 2000


class Failing(MemoryStore):
    """Reads fail with ``error`` (None: they do not), counted."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__()
        self.error = error
        self.reads = 0

    def read(self, job_id: str) -> Row | None:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return super().read(job_id)


@pytest.mark.parametrize(
    ("error", "reads"),
    [(StoreError("down"), 3), (ConnectionError("refused"), 3), (KeyError("bug"), 1)],
)
def test_only_a_store_failure_is_tried_again(
    error: Exception, reads: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = Failing(error)
    recording = TaskRecorder(store, sleep=lambda _: None)
    with caplog.at_level(logging.WARNING, logger="jobstatus.queues"):
        assert not recording.running("j", None)
    assert store.reads == reads
    assert caplog.records[0].getMessage().startswith("job j: running not recorded")


def test_after_a_change_dropped_for_an_outage_the_next_are_tried_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that hangs costs each later event one try (one timeout),
    not three and the pauses, until it answers again or 5 s pass."""
    store = Failing(StoreError("timed out"))
    now = [100.0]
    recording = TaskRecorder(store, sleep=lambda _: None, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="jobstatus.queues"):
        assert not recording.running("j", None)
        assert store.reads == 3
        assert not recording.done("j", None, 1)
        assert store.reads == 4  # tried once
        assert "after 1 try, dropped" in caplog.records[-1].getMessage()
        now[0] += 6  # past the 5 s: tried as a store never seen down
        assert not recording.done("j", None, 1)
        assert store.reads == 7
        store.error = None  # it answers again: taken for up at once
        assert recording.done("j", None, 1)
        store.error = StoreError("timed out")
        reads = store.reads
        assert not recording.done("k", None, 1)
        assert store.reads == reads + 3


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileStore]:
    store = FileStore(tmp_path, index=False)
    yield store
    store.close()


def test_the_file_store_refuses_a_record_it_could_not_read_back(
    files: FileStore,
) -> None:
    big = {"job_id": "j", "job_status": "done", "response": "x" * FIVE_MB}
    with pytest.raises(InvalidRecord, match="4194304 bytes"):
        files.put(big)
    assert files.read("j") is None  # nothing written
    files.put({"job_id": "j", "job_status": "running"})
    with pytest.raises(InvalidRecord, match="4194304 bytes"):
        files.put(big)
    row = files.read("j")
    assert row is not None and row.record["job_status"] == "running"


def end_of(store: FileStore, job_id: str) -> dict[str, Any]:
    row = store.read(job_id)  # readable: not over the limit
    assert row is not None
    return dict(row.record)


def test_an_end_too_large_for_the_store_is_recorded_with_a_stand_in(
    files: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    recording = TaskRecorder(files)
    for job_id in ("done", "failed"):
        recording.queued(job_id, None, "big")
        recording.running(job_id, None)
    with caplog.at_level(logging.WARNING, logger="jobstatus.queues"):
        assert recording.done("done", None, "x" * FIVE_MB)
        assert recording.failed("failed", None, ValueError("y" * FIVE_MB))
    done = end_of(files, "done")
    assert done["job_status"] == "done"
    assert done["response"]["type"] == "builtins.str"
    assert done["response"]["repr"].startswith("<response not kept: job done: ")
    assert "4194304 bytes" in done["response"]["repr"]
    failed = end_of(files, "failed")
    assert failed["job_status"] == "failed"
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"].startswith("<message not kept: job failed: ")
    assert [r.getMessage().split(":")[1] for r in caplog.records] == [
        " done recorded without its value",
        " failed recorded without its value",
    ]
    # The job can still change: a retry is recorded.
    assert recording.queued("failed", 2, "big")
    assert end_of(files, "failed")["job_status"] == "queued"


def test_a_job_id_outside_the_rule_is_one_warning_and_never_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A queue's custom id that no record can have (``order:42``, 129
    characters) is said once per job, naming the rule: never tried as a
    value too large for the store, and no event of it raises."""
    store = MemoryStore()
    recording = TaskRecorder(store)
    refused = ("order:42", "x" * 129)
    with caplog.at_level(logging.WARNING, logger="jobstatus.queues"):
        for job_id in refused:
            assert not recording.queued(job_id, None, "t")
            assert not recording.running(job_id, None)
            assert not recording.progress(job_id, None, 1, 2, None)
            assert not recording.done(job_id, None, "x" * FIVE_MB)
            assert not recording.failed(job_id, None, ValueError("no"))
            assert recording.attempt_of(job_id) == 1
        assert recording.done("order-42", None, 1)  # within the rule
    assert [r.getMessage() for r in caplog.records] == [
        f"job {job_id!r} not recorded: a job id must be {JOB_ID_RULE}"
        for job_id in refused
    ]
    assert [job_id for job_id, _ in store.changed_since(0)] == ["order-42"]
