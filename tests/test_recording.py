"""The recording rules (SPEC §13) as a pure function, and the wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobstatus_core import (
    Expiring,
    InvalidRecord,
    Presence,
    ProcessLocal,
    RecordTexts,
    Row,
    Stale,
    Versioned,
)
from jobstatus_core.protocol import Inline, Notifying
from jobstatus_core.recording import Change, apply, check_fields
from jobstatus_core.wrapping import StoreWrapper, wrap

STAGE = {"queued": 0, "running": 1, "done": 2, "failed": 2, "cancelled": 2}


def test_a_new_job_starts_at_attempt_one_with_toolkit_fields() -> None:
    record = apply(None, Change("j", "queued", {"task": "t"}), now=5.0)
    assert record == {
        "job_id": "j",
        "job_status": "queued",
        "response": None,
        "attempt": 1,
        "created_at": 5.0,
        "task": "t",
    }


def test_meta_on_an_unknown_job_is_ignored() -> None:
    assert apply(None, Change("j", "meta", {"a": 1}), now=1.0) is None


def test_failed_keeps_type_and_message() -> None:
    running = apply(None, Change("j", "running"), now=1.0)
    failed = apply(
        running, Change("j", "failed", error={"type": "E", "message": "m"}), 2.0
    )
    assert failed is not None
    assert failed["error"] == {"type": "E", "message": "m"}
    assert failed["finished_at"] == 2.0 and failed["started_at"] == 1.0


def test_unknown_fields_are_kept() -> None:
    current = {"job_id": "j", "job_status": "running", "custom": [1], "attempt": 1}
    done = apply(current, Change("j", "done", response={"ok": True}), now=3.0)
    assert done is not None and done["custom"] == [1]


def test_reserved_fields_are_refused() -> None:
    with pytest.raises(InvalidRecord):
        check_fields({"job_status": "x"})
    with pytest.raises(InvalidRecord):
        apply(None, Change("j", "queued", attempt=0), now=1.0)


changes = st.lists(
    st.tuples(
        st.sampled_from(
            ["queued", "running", "progress", "done", "failed", "cancelled", "meta"]
        ),
        st.one_of(st.none(), st.integers(1, 3)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(changes)
def test_a_job_never_moves_backwards(sequence: list[tuple[Any, int | None]]) -> None:
    record: dict[str, Any] | None = None
    for i, (kind, attempt) in enumerate(sequence):
        before = record
        after = apply(before, Change("j", kind, {}, attempt), now=float(i))
        if after is None:
            continue
        record = after
        if before is None:
            continue
        assert after["attempt"] >= before["attempt"]
        if after["attempt"] == before["attempt"] and kind != "meta":
            old, new = before["job_status"], after["job_status"]
            assert STAGE[new] >= STAGE[old]
            assert STAGE[old] < 2, "a terminal status of an attempt never changes"


class Counting(StoreWrapper):
    calls = 0

    def mark(self) -> Any:
        Counting.calls += 1
        return super().mark()


@pytest.mark.filesystem
def test_a_wrapper_keeps_the_capabilities_of_what_it_wraps(tmp_path: Any) -> None:
    from jobstatus_backends import store_from_url

    memory = wrap(store_from_url("memory://"), Counting)
    assert isinstance(memory, Inline) and not isinstance(memory, Presence)
    assert isinstance(memory, ProcessLocal)
    # Not passed on: job/status reads through the wrapper's get.
    assert not isinstance(memory, RecordTexts)
    assert isinstance(memory, Notifying) and isinstance(memory, Versioned)
    memory.mark()
    assert Counting.calls == 1
    files = wrap(store_from_url(f"file://{tmp_path}?index=off"), Counting)
    assert isinstance(files, Presence) and not isinstance(files, Inline)
    assert not isinstance(files, ProcessLocal)
    assert files.exists() is False
    assert not isinstance(files, Expiring) and isinstance(files, Versioned)
    files.close()
    expiring = wrap(
        store_from_url(f"file://{tmp_path}?index=off&expire=delete"), Counting
    )
    assert isinstance(expiring, Expiring) and isinstance(expiring, Versioned)
    expiring.put({"job_id": "a", "job_status": "done"}, at=1.0)
    (tomb,) = expiring.expire(expiring.stale(Stale(before=2.0)), at=3.0)
    assert expiring.tombstones(["a"]) == {"a": tomb}
    version = expiring.swapped({"job_id": "a", "job_status": "queued"}, expected=None)
    assert version == expiring.read("a").version  # type: ignore[union-attr]
    expiring.close()


def test_a_retry_drops_only_how_the_last_attempt_went() -> None:
    current = {
        "job_id": "j",
        "job_status": "failed",
        "attempt": 1,
        "task": "t",
        "priority": 5,
        "process_id": 9,
        "meta": {"a": 1},
        "created_at": 1.0,
        "started_at": 2.0,
        "finished_at": 3.0,
        "error": {"type": "E", "message": "m"},
        "progress": {"done": 1, "total": 2, "message": None},
        "response": {"partial": True},
    }
    retried = apply(current, Change("j", "queued", attempt=2), now=4.0)
    assert retried == {
        "job_id": "j",
        "job_status": "queued",
        "attempt": 2,
        "task": "t",
        "priority": 5,
        "process_id": 9,
        "meta": {"a": 1},
        "created_at": 1.0,
        "response": None,
    }


@pytest.mark.parametrize("attempt", [True, 1.5, "2", 0, -1])
def test_an_attempt_is_a_whole_number_from_one(attempt: Any) -> None:
    with pytest.raises(InvalidRecord):
        apply(None, Change("j", "queued", attempt=attempt), now=1.0)


@pytest.mark.memory
def test_recorder_refuses_what_it_cannot_store() -> None:
    from jobstatus_backends import store_from_url
    from jobstatus_backends.recorder import Recorder

    recorder = Recorder(store_from_url("memory://"))
    with pytest.raises(InvalidRecord):
        recorder.queued("j", blob=object())
    with pytest.raises(InvalidRecord):
        recorder.queued("j", ratio=float("nan"))
    assert recorder.queued("j")
    with pytest.raises(InvalidRecord):
        recorder.meta("j", attempt=2)

    async def work() -> int:
        return 1

    with pytest.raises(TypeError, match=r"AsyncRecorder\.tracked"):
        recorder.tracked("j")(work)


@pytest.mark.memory
def test_the_async_recorder_has_the_same_calls() -> None:
    import asyncio

    from jobstatus_backends import store_from_url
    from jobstatus_backends.recorder import AsyncRecorder

    store = store_from_url("memory://")
    recorder = AsyncRecorder(store)

    async def scenario() -> None:
        assert await recorder.queued("a", task="t")
        assert await recorder.progress("a", 1, 2, "half", attempt=1)
        assert await recorder.done("a", {"ok": True}, attempt=1)
        assert not await recorder.cancelled("a", attempt=1)
        assert await recorder.failed("b", "boom", attempt=2)
        async with recorder.track("c"):
            pass

        @recorder.tracked("d")
        async def work() -> dict[str, int]:
            return {"n": 1}

        assert await work() == {"n": 1}
        with pytest.raises(RuntimeError):
            async with recorder.track("e"):
                raise RuntimeError("no")

    asyncio.run(scenario())
    assert store.get("a") is not None and store.get("a")["response"] == {"ok": True}  # type: ignore[index]
    assert store.get("b")["attempt"] == 2  # type: ignore[index]
    assert store.get("c")["job_status"] == "done"  # type: ignore[index]
    assert store.get("d")["response"] == {"n": 1}  # type: ignore[index]
    assert store.get("e")["error"] == {"type": "RuntimeError", "message": "no"}  # type: ignore[index]


@pytest.mark.sqlite
def test_a_recorder_reads_a_job_only_when_another_writer_changed_it(
    tmp_path: Path,
) -> None:
    from jobstatus_backends.recorder import Recorder
    from jobstatus_backends.sqlite import SQLiteStore

    class CountingReads(SQLiteStore):
        """A SQLite store that counts the recorder's reads."""

        reads = 0

        def read(self, job_id: str) -> Row | None:
            self.reads += 1
            return super().read(job_id)

    store = CountingReads(tmp_path / "jobs.db")
    other = Recorder(SQLiteStore(tmp_path / "jobs.db"))
    recorder = Recorder(store)
    assert recorder.queued("job")
    assert recorder.running("job")
    assert recorder.progress("job", 1, 2)
    assert store.reads == 0  # each change swapped at the version it wrote
    assert other.meta("job", owner="me")
    assert recorder.done("job", {"ok": True})  # the kept version is stale
    assert store.reads == 1
    assert not recorder.running("job")  # out of order against what it wrote:
    assert store.reads == 2  # read again before saying so
    record = store.get("job")
    assert record is not None
    assert record["meta"] == {"owner": "me"}
    assert record["response"] == {"ok": True}


@pytest.mark.filesystem
def test_a_recorder_opens_a_file_store_without_an_index(tmp_path: Path) -> None:
    """Recording reads one file and writes it: a worker given the URL must not
    scan every job file and watch the directory first."""
    from jobstatus_backends import store_from_url
    from jobstatus_backends.filesystem import FileStore, WatchedFileStore
    from jobstatus_backends.recorder import Recorder

    (tmp_path / "jobs").mkdir()
    serving = store_from_url(f"file://{tmp_path}")
    assert isinstance(serving, WatchedFileStore)
    recorder = Recorder(f"file://{tmp_path}")
    try:
        store = recorder.store
        assert isinstance(store, FileStore) and store.index is None
        assert recorder.running("job-1") and recorder.done("job-1", {"ok": 1})
        # What it wrote is what the indexed store answers.
        row = serving.read("job-1")
        assert row is not None and row.record is not None
        assert row.record["job_status"] == "done"
    finally:
        recorder.close()
        serving.close()
    asked = Recorder(f"file://{tmp_path}?index=on")
    try:
        assert isinstance(asked.store, WatchedFileStore)
    finally:
        asked.close()
