"""What only the filesystem store promises: the Toolkit's files, live."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import httpx
import pytest
from watchdog.events import EventsLostEvent
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from jobstatus_adapters.starlette import create_app
from jobstatus_backends import fsindex, jobfiles
from jobstatus_backends.fileexpiry import ExpiringFileStore, ExpiringWatchedFileStore
from jobstatus_backends.filesystem import FileStore, WatchedFileStore
from jobstatus_core import (
    JOB_STATUS_PATH,
    JOBS_STATUS_PATH,
    ConfigError,
    Query,
    Row,
    Stale,
    StoreError,
    Tombstone,
    WouldBlock,
    nowait,
)
from jobstatus_core.protocol import Notifying

from .helpers import API_KEY, service_for, stat_with_size, wait_for

pytestmark = pytest.mark.filesystem

# The observer's latency: watchdog holds inotify events ~0.5 s to pair moves;
# generous, for a busy machine that schedules watchdog's threads late. Only
# ever a bound on waiting for something that must come, never on "nothing
# happens", so a generous one costs nothing when the test passes.
LATENCY = 10.0
JSON = {"content-type": "application/json", "x-api-key": API_KEY}


@pytest.fixture(params=["index", "scan"])
def fstore(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileStore]:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, index=request.param == "index", reconcile_interval=0.5)
    yield store
    store.close()


def write_toolkit_file(root: Path, job_id: str, status: Any, **extra: Any) -> Path:
    """Write a job file in place, as the Toolkit does (not atomically)."""
    path = root / "jobs" / f"{job_id}.json"
    with path.open("w") as file:
        json.dump({"job_id": job_id, "job_status": status, **extra}, file)
    return path


def listing(store: FileStore) -> dict[str, Any]:
    return dict(store.changed_since(0))


def test_put_writes_the_toolkit_layout(fstore: FileStore, tmp_path: Path) -> None:
    record = {"job_id": "job-1", "job_status": "done", "response": {"url": "x"}}
    fstore.put(record, at=1234.5)
    path = tmp_path / "jobs" / "job-1.json"
    assert json.loads(path.read_text()) == record
    assert path.stat().st_mtime == 1234.5
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [
        "job-1.json"
    ]  # no temp left


def test_job_files_take_the_mode_the_toolkit_s_have(
    fstore: FileStore, tmp_path: Path
) -> None:
    """0666 less the umask, as Python's open() makes the Toolkit's: a server
    running as another user than the workers reads what they write."""
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        before = os.umask(umask)
        try:
            toolkit = write_toolkit_file(tmp_path, f"toolkit-{umask:o}", "done")
            fstore.put({"job_id": f"ours-{umask:o}", "job_status": "done"})
        finally:
            os.umask(before)
        ours = tmp_path / "jobs" / f"ours-{umask:o}.json"
        assert ours.stat().st_mode & 0o777 == mode == toolkit.stat().st_mode & 0o777


def test_reads_files_written_by_others(fstore: FileStore, tmp_path: Path) -> None:
    write_toolkit_file(tmp_path, "ext-1", "running", queue_id=5)
    assert fstore.get("ext-1") == {
        "job_id": "ext-1",
        "job_status": "running",
        "queue_id": 5,
    }
    wait_for(lambda: listing(fstore) == {"ext-1": "running"}, LATENCY)
    write_toolkit_file(tmp_path, "ext-1", "done")
    wait_for(lambda: listing(fstore) == {"ext-1": "done"}, LATENCY)


def test_rename_and_delete(fstore: FileStore, tmp_path: Path) -> None:
    write_toolkit_file(tmp_path, "a", "done")
    wait_for(lambda: listing(fstore) == {"a": "done"}, LATENCY)
    os.rename(tmp_path / "jobs" / "a.json", tmp_path / "jobs" / "b.json")
    wait_for(lambda: listing(fstore) == {"b": "done"}, LATENCY)
    os.rename(tmp_path / "jobs" / "b.json", tmp_path / "jobs" / "b.json.bak")
    wait_for(lambda: listing(fstore) == {}, LATENCY)
    os.rename(tmp_path / "jobs" / "b.json.bak", tmp_path / "jobs" / "c.json")
    wait_for(lambda: listing(fstore) == {"c": "done"}, LATENCY)
    (tmp_path / "jobs" / "c.json").unlink()
    wait_for(lambda: listing(fstore) == {}, LATENCY)
    assert fstore.get("c") is None


def test_records_without_job_status_are_left_out(
    fstore: FileStore, tmp_path: Path
) -> None:
    (tmp_path / "jobs" / "bare.json").write_text('{"job_id": "bare"}')
    write_toolkit_file(tmp_path, "full", "done")
    wait_for(lambda: listing(fstore) == {"full": "done"}, LATENCY)
    assert fstore.get("bare") == {"job_id": "bare"}


def test_partial_and_foreign_files_are_skipped(
    fstore: FileStore, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    (tmp_path / "secret.json").write_text(
        '{"job_id": "secret", "job_status": "leaked"}'
    )
    (jobs / "half.json").write_text('{"job_id": "half", "job_st')
    (jobs / "list.json").write_text('["not", "an", "object"]')
    (jobs / "notes.txt").write_text('{"job_status": "x"}')
    (jobs / ".hidden.json").write_text('{"job_status": "x"}')
    (jobs / "dir.json").mkdir()
    (jobs / "link.json").symlink_to(tmp_path / "secret.json")
    os.mkfifo(jobs / "fifo.json")
    write_toolkit_file(tmp_path, "good", "done")
    wait_for(lambda: listing(fstore) == {"good": "done"}, LATENCY)
    assert fstore.get("link") is None
    assert fstore.get("dir") is None
    assert fstore.get("fifo") is None
    assert fstore.get("../secret") is None


def test_partial_file_is_a_500_on_get_and_skipped_in_listing(
    tmp_path: Path, serve: Any
) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "half.json").write_text('{"job_id": "half", "job_st')
    write_toolkit_file(tmp_path, "good", "done")
    store = FileStore(tmp_path, index=False)
    url = serve(create_app(service_for(store)))
    one = httpx.post(url + JOB_STATUS_PATH, json={"job_id": "half"}, headers=JSON)
    assert one.status_code == 500
    assert (
        one.json()["message"]
        == "Failed to retrieve job status: the file of job half is not a JSON object"
    )
    many = httpx.post(url + JOBS_STATUS_PATH, json={}, headers=JSON)
    assert many.status_code == 200 and many.json()["response"] == {"good": "done"}
    store.close()


def test_a_file_that_does_not_parse_is_left_out_of_batch_wait_and_feed(
    tmp_path: Path, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The moments a writer in place leaves: truncated, and half written.
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "empty.json").write_text("")
    (tmp_path / "jobs" / "half.json").write_text('{"job_id": "half", "job_st')
    write_toolkit_file(tmp_path, "good", "done")
    store = FileStore(tmp_path, index=False)
    url = serve(create_app(service_for(store)))

    def skipped() -> list[str]:
        return sorted(
            record.getMessage()
            for record in caplog.records
            if record.getMessage().startswith("skipping job file")
        )

    try:
        feed = url + "/v1/jobs/events?job_id=good&job_id=empty"
        with httpx.stream("GET", feed, headers=JSON) as events:
            assert events.status_code == 200
            data = (line for line in events.iter_lines() if line.startswith("data:"))
            assert json.loads(next(data)[5:])["job_id"] == "good"
        logged = None
        for _ in range(3):
            batch = httpx.post(
                url + "/v1/jobs/batch",
                json={"job_ids": ["good", "empty", "half"]},
                headers=JSON,
            )
            assert batch.status_code == 200, batch.text
            answered = batch.json()["response"]
            assert list(answered["jobs"]) == ["good"]
            assert sorted(answered["unknown"]) == ["empty", "half"]
            # Logged once per state of each file, however often it is asked.
            assert logged in (None, skipped())
            logged = skipped()
        assert "skipping job file: the file of job half is not a JSON object" in logged
        waited = httpx.post(
            url + "/v1/jobs/wait",
            json={"job_ids": ["good", "empty"], "timeout": 1},
            headers=JSON,
        )
        assert waited.status_code == 200, waited.text
        assert list(waited.json()["response"]["jobs"]) == ["good"]
        assert waited.json()["response"]["pending"] == ["empty"]
        assert skipped() == logged
    finally:
        store.close()


def test_a_file_written_within_the_waits_is_read_by_read_many(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "late.json"
    path.write_text('{"job_id": "late", "job_st')
    store = FileStore(tmp_path, index=False)
    finish = threading.Timer(
        0.02, lambda: write_toolkit_file(tmp_path, "late", "running")
    )
    try:
        finish.start()
        rows = store.read_many(["late"])
        assert rows["late"].record == {"job_id": "late", "job_status": "running"}
    finally:
        finish.join()
        store.close()


def test_jobs_directory_removed_and_recreated(
    fstore: FileStore, tmp_path: Path
) -> None:
    write_toolkit_file(tmp_path, "a", "done")
    wait_for(lambda: listing(fstore) == {"a": "done"}, LATENCY)
    shutil.rmtree(tmp_path / "jobs")
    assert fstore.exists() is False
    assert fstore.get("a") is None
    (tmp_path / "jobs").mkdir()
    assert fstore.exists() is True
    write_toolkit_file(tmp_path, "b", "queued")
    wait_for(lambda: listing(fstore) == {"b": "queued"}, LATENCY)
    # A put recreates a missing directory and is read back at once.
    shutil.rmtree(tmp_path / "jobs")
    fstore.put({"job_id": "c", "job_status": "done"})
    assert listing(fstore) == {"c": "done"}


def test_put_into_a_directory_removed_before_the_observer_said_so(
    tmp_path: Path,
) -> None:
    # The fault: an observer that reports nothing for a minute.
    store = FileStore(
        tmp_path,
        reconcile_interval=60,
        observer_factory=lambda: PollingObserver(timeout=60),
    )
    try:
        store.put({"job_id": "b", "job_status": "queued"})
        assert listing(store) == {"b": "queued"}
        shutil.rmtree(tmp_path / "jobs")
        store.put({"job_id": "c", "job_status": "done"})
        assert listing(store) == {"c": "done"}
        assert store.get("b") is None
    finally:
        store.close()


def test_an_interrupt_as_the_temp_file_is_created_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fault: Ctrl-C lands just after the temp file exists, before the
    # write has its descriptor (where tempfile.mkstemp could not clean up).
    create = jobfiles._create

    def interrupted(jobs_dir: str, temp: str) -> int:
        os.close(create(jobs_dir, temp))
        raise KeyboardInterrupt

    store = FileStore(tmp_path, index=False)
    monkeypatch.setattr(jobfiles, "_create", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put({"job_id": "a", "job_status": "queued"})
    assert os.listdir(tmp_path / "jobs") == []


def test_missing_jobs_directory_is_404_over_http(tmp_path: Path, serve: Any) -> None:
    store = FileStore(tmp_path)
    url = serve(create_app(service_for(store)))
    many = httpx.post(url + JOBS_STATUS_PATH, json={}, headers=JSON)
    assert (
        many.status_code == 404 and many.json()["message"] == "Jobs directory not found"
    )
    one = httpx.post(url + JOB_STATUS_PATH, json={"job_id": "x"}, headers=JSON)
    assert one.status_code == 404 and one.json()["message"] == "Job not found"
    (tmp_path / "jobs").mkdir()
    write_toolkit_file(tmp_path, "x", "done")
    wait_for(
        lambda: (
            httpx.post(url + JOBS_STATUS_PATH, json={}, headers=JSON).json()["response"]
            == {"x": "done"}
        ),
        LATENCY,
    )
    store.close()


def test_a_read_refused_on_the_loop_and_made_on_a_thread_counts_once(
    tmp_path: Path, settled_at_once: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter tries a read on the event loop, then on a thread: a job
    a client asked about once is not kept by the two attempts."""
    store = kept_store(tmp_path)
    write_toolkit_file(tmp_path, "a", "done")

    def cold(fd: int, size: int) -> bytes:
        raise WouldBlock("the job file is not in the page cache")

    with monkeypatch.context() as patch:
        patch.setattr(jobfiles, "_read_cached", cold)
        with nowait.attempt(), pytest.raises(WouldBlock):
            store.read_text("a")
    assert store.read_text("a") is not None  # the thread's attempt
    assert "a" not in store._kept  # type: ignore[operator]
    assert store.read_text("a") is not None  # a second request
    assert "a" in store._kept  # type: ignore[operator]
    store.close()


@pytest.mark.parametrize("index", [True, False], ids=["index", "scan"])
def test_jobs_a_symlink_loop_is_404_not_500(tmp_path: Path, index: bool) -> None:
    """A listing that fails because jobs/ cannot be listed asks Presence."""
    store = kept_store(tmp_path, index=index)
    write_toolkit_file(tmp_path, "x", "done")
    store.read("x")
    app = create_app(service_for(store))

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(JOBS_STATUS_PATH, json={}, headers=JSON)

    assert anyio.run(ask).json()["response"] == {"x": "done"}
    shutil.rmtree(tmp_path / "jobs")
    (tmp_path / "jobs").symlink_to(tmp_path / "jobs")  # ELOOP
    many = anyio.run(ask)
    assert many.status_code == 404, many.text
    assert many.json()["message"] == "Jobs directory not found"
    store.close()


def test_a_listed_jobs_directory_removed_is_404_at_once(
    fstore: FileStore, tmp_path: Path, serve: Any
) -> None:
    """Presence is asked only of an empty listing: a listing that was kept
    with jobs in it must not outlive the directory."""
    url = serve(create_app(service_for(fstore)))
    write_toolkit_file(tmp_path, "x", "done")
    fstore.read("x")  # indexed at once
    for _ in range(3):  # kept by now
        many = httpx.post(url + JOBS_STATUS_PATH, json={}, headers=JSON)
        assert many.json()["response"] == {"x": "done"}
    os.rename(tmp_path / "jobs", tmp_path / "gone")
    many = httpx.post(url + JOBS_STATUS_PATH, json={}, headers=JSON)
    assert many.status_code == 404, many.text
    assert many.json()["message"] == "Jobs directory not found"


def test_burst_of_10000_files_while_serving(tmp_path: Path, serve: Any) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, reconcile_interval=1.0)
    url = serve(create_app(service_for(store)))
    codes: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, headers=JSON) as http:
            while not stop.is_set():
                codes.append(http.post(JOBS_STATUS_PATH, json={}).status_code)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(10_000):
            write_toolkit_file(tmp_path, f"burst-{i}", "queued" if i % 2 else "done")
    finally:

        def complete() -> bool:
            return (
                len(
                    httpx.post(url + JOBS_STATUS_PATH, json={}, headers=JSON).json()[
                        "response"
                    ]
                )
                == 10_000
            )

        try:
            wait_for(complete, 30)
        finally:
            stop.set()
            poller.join()
            store.close()
    assert codes and set(codes) == {200}


INPLACE_WRITER = r"""
import json, os, sys, time
jobs = sys.argv[1]
for i in range(400):
    job_id = f"w-{i % 50}"
    path = os.path.join(jobs, job_id + ".json")
    # In place, in two writes, like a writer that does not care for readers.
    with open(path, "w") as f:
        record = {"job_id": job_id, "job_status": f"step-{i}", "pad": "x" * 2000}
        text = json.dumps(record)
        f.write(text[:100]); f.flush(); time.sleep(0.001); f.write(text[100:])
    print(job_id, f"step-{i}", time.time(), flush=True)
"""


def test_in_place_writer_in_another_process(tmp_path: Path, serve: Any) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, reconcile_interval=1.0)
    url = serve(create_app(service_for(store)))
    writer = subprocess.Popen(
        [sys.executable, "-c", INPLACE_WRITER, str(tmp_path / "jobs")],
        stdout=subprocess.PIPE,
        text=True,
    )
    answers = []
    with httpx.Client(base_url=url, headers=JSON) as http:
        while writer.poll() is None:
            answers.append(http.post(JOBS_STATUS_PATH, json={}))
            answers.append(http.post(JOB_STATUS_PATH, json={"job_id": "w-1"}))
        out, _ = writer.communicate()
        assert writer.returncode == 0
        final: dict[str, str] = {}
        for line in out.splitlines():
            job_id, status, _ = line.split()
            final[job_id] = status
        # Every completed write is visible within the observer's latency.
        wait_for(
            lambda: http.post(JOBS_STATUS_PATH, json={}).json()["response"] == final,
            LATENCY,
        )
    store.close()
    assert answers
    # 404 only until the writer's first write of w-1; never a 5xx.
    assert {a.status_code for a in answers} <= {200, 404}
    assert {
        a.status_code for a in answers if a.request.url.path == JOBS_STATUS_PATH
    } == {200}


def test_observer_that_dies_is_restarted(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, reconcile_interval=0.2)
    assert store.index is not None
    observer = store.index._observer
    assert observer is not None
    observer.stop()
    observer.join()
    write_toolkit_file(tmp_path, "after", "done")
    wait_for(lambda: listing(store) == {"after": "done"}, LATENCY)
    assert store.index._observer is not observer and store.index._observer.is_alive()
    store.close()


def test_missed_events_are_reconciled(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, reconcile_interval=0.2)
    assert store.index is not None
    # As when inotify overflows: the events are lost, the files are there.
    store.index._observer.unschedule_all()  # type: ignore[union-attr]
    write_toolkit_file(tmp_path, "silent", "done")
    wait_for(lambda: listing(store) == {"silent": "done"}, LATENCY)
    store.close()


def test_polling_observer_can_be_injected(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, observer_factory=lambda: PollingObserver(timeout=0.1))
    write_toolkit_file(tmp_path, "p", "done")
    wait_for(lambda: listing(store) == {"p": "done"}, LATENCY)
    store.close()


def test_no_observer_falls_back_to_scanning(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()

    def broken() -> PollingObserver:
        raise OSError(28, "inotify watch limit reached")

    store = FileStore(tmp_path, observer_factory=broken)
    assert store.index is None
    write_toolkit_file(tmp_path, "s", "done")
    assert listing(store) == {"s": "done"}
    store.close()


class WatchLimitObserver(Observer):  # type: ignore[misc,valid-type]
    """A real inotify observer that, while ``full``, refuses to watch a
    jobs directory as a machine at its inotify watch limit does."""

    full = True

    def schedule(self, handler: Any, path: str, **options: Any) -> Any:
        if self.full and os.path.basename(path) == "jobs":
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return super().schedule(handler, path, **options)


def test_a_jobs_directory_that_cannot_be_watched_is_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # jobs/ appears after the start, when no watch is left for it: the
    # listings scan (they answered {} for ever), said once, and the index
    # takes over again when a watch succeeds.
    monkeypatch.setattr(fsindex, "WATCH_RETRY_SECONDS", 0.0)
    monkeypatch.setattr(WatchLimitObserver, "full", True)
    store = FileStore(tmp_path, observer_factory=WatchLimitObserver)
    try:
        assert store.index is not None and listing(store) == {}
        (tmp_path / "jobs").mkdir()
        for n in range(3):
            write_toolkit_file(tmp_path, f"j{n}", "done")
        every = {f"j{n}": "done" for n in range(3)}
        wait_for(lambda: listing(store) == every, LATENCY)  # jobs/ is seen
        for _ in range(3):
            assert listing(store) == every
        said = [r for r in caplog.records if "cannot watch" in r.getMessage()]
        assert len(said) == 1 and not [r for r in caplog.records if r.exc_info]
        monkeypatch.setattr(WatchLimitObserver, "full", False)
        assert listing(store) == every
        assert store.index._jobs_watch is not None  # watched again
        write_toolkit_file(tmp_path, "late", "done")
        wait_for(lambda: "late" in listing(store), LATENCY)
    finally:
        store.close()


def test_lost_events_have_the_next_query_rescan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = os.path.realpath(tmp_path / "jobs")
    os.mkdir(jobs)
    store = FileStore(tmp_path, reconcile_interval=3600)
    try:
        index = store.index
        assert index is not None and index._observer is not None
        # A file whose events were lost (the kernel's queue overflowed)...
        # The fault stays on to the end: an event watchdog delivers late is
        # dropped too, so only the lost-events path (``_lost``) can bring
        # the file in.
        with monkeypatch.context() as fault:
            dropped: list[str] = []
            fault.setattr(index, "_saw", dropped.append)
            write_toolkit_file(tmp_path, "missed", "done")
            # Its events came, and were dropped.
            wait_for(
                lambda: "missed.json" in [os.path.basename(p) for p in dropped],
                LATENCY,
            )
            assert listing(store) == {}
            # ...is read once watchdog says so (through the watch's own
            # filter), not at the next reconcile.
            emitters = index._observer.emitters
            (emitter,) = [e for e in emitters if e.watch.path == jobs]
            emitter.queue_event(EventsLostEvent(jobs, is_directory=True))
            wait_for(lambda: listing(store) == {"missed": "done"}, LATENCY)
    finally:
        store.close()


def test_url_options(tmp_path: Path) -> None:
    scan = FileStore.from_url(f"file://{tmp_path}?index=off")
    assert scan.index is None
    scan.close()
    live = FileStore.from_url(f"file://{tmp_path}?reconcile=5")
    assert live.index is not None and live.index.reconcile_interval == 5
    assert live.durable
    live.close()
    fast = FileStore.from_url(f"file://{tmp_path}?index=off&durable=off")
    assert not fast.durable
    fast.close()
    for bad in (
        f"file://{tmp_path}?index=maybe",
        f"file://{tmp_path}?durable=maybe",
        f"file://{tmp_path}?reconcile=0",
        f"file://{tmp_path}?colour=red",
        "file://host/x",
        "file:relative",
        f"file://{tmp_path}/missing",
    ):
        with pytest.raises(ConfigError):
            FileStore.from_url(bad)


def test_a_number_option_says_its_rule_whatever_the_text(tmp_path: Path) -> None:
    for bad in ("9" * 5000, "٣", "0"):
        with pytest.raises(ConfigError, match="must be a whole number of bytes > 0"):
            FileStore.from_url(f"file://{tmp_path}?max_file_size={bad}")


def test_index_memory_is_bounded_by_jobs_not_events(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path)
    for round_ in range(5):
        for i in range(200):
            write_toolkit_file(tmp_path, f"j{i}", f"r{round_}")
    wait_for(lambda: listing(store) == {f"j{i}": "r4" for i in range(200)}, LATENCY)
    assert store.index is not None and len(store.index) == 200
    store.close()


def test_serving_never_opens_a_file_outside_the_jobs_directory(
    tmp_path: Path, serve: Any
) -> None:
    (tmp_path / "jobs").mkdir()
    write_toolkit_file(tmp_path, "ok", "done")
    (tmp_path / "secret.json").write_text("{}")
    store = FileStore(tmp_path, index=False)
    url = serve(create_app(service_for(store)))
    opened: list[str] = []
    jobs = str(tmp_path / "jobs") + os.sep

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str) and str(tmp_path) in args[0]:
            opened.append(args[0])

    sys.addaudithook(audit)
    with httpx.Client(base_url=url, headers=JSON) as http:
        for job_id in (
            "ok",
            "../secret",
            "..",
            "ok/../../secret",
            "/etc/passwd",
            "secret",
            "%2e%2e%2fsecret",
        ):
            assert http.post(JOB_STATUS_PATH, json={"job_id": job_id}).status_code in (
                200,
                400,
                404,
            )
        assert http.post(JOBS_STATUS_PATH, json={}).status_code == 200
    store.close()
    assert opened, "the audit hook saw no open at all"
    assert all(path.startswith(jobs) for path in opened), opened


def test_a_file_that_grew_after_its_stat_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobstatus_backends import jobfiles

    (tmp_path / "jobs").mkdir()
    record = {"job_id": "big", "job_status": "done", "log": "x" * 200_000}
    (tmp_path / "jobs" / "big.json").write_text(json.dumps(record))
    real_fstat = os.fstat

    def fstat_seen_early(fd: int) -> os.stat_result:
        # Fault: the size as it was before the writer's last 199,990 bytes.
        return stat_with_size(real_fstat(fd), 10)

    monkeypatch.setattr(jobfiles.os, "fstat", fstat_seen_early)
    store = FileStore(tmp_path, index=False)
    assert store.get("big") == record
    store.close()


# -- the store protocol v2 ----------------------------------------------------

SWAPPER = r"""
import sys
from jobstatus_backends.filesystem import FileStore

store = FileStore(sys.argv[1], index=False)
for _ in range(int(sys.argv[2])):
    while True:
        row = store.read("n")
        new = dict(row.record, count=row.record["count"] + 1)
        if store.swap(new, expected=row.version):
            break
store.close()
"""


def test_swaps_from_several_processes_lose_no_update(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, index=False)
    store.put({"job_id": "n", "job_status": "running", "count": 0})
    workers = [
        subprocess.Popen([sys.executable, "-c", SWAPPER, str(tmp_path), "40"])
        for _ in range(4)
    ]
    for worker in workers:
        assert worker.wait() == 0
    assert store.get("n") == {"job_id": "n", "job_status": "running", "count": 160}
    # The lock lives beside the Toolkit's directory, never in it.
    assert (tmp_path / ".jobstatus" / "lock").is_file()
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == ["n.json"]
    store.close()


def test_every_instance_agrees_on_versions(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    write_toolkit_file(tmp_path, "a", "running")
    one, two = FileStore(tmp_path), FileStore(tmp_path, index=False)
    try:
        first, second = one.read("a"), two.read("a")
        assert first is not None and second is not None
        assert first.version == second.version
        assert two.swap({"job_id": "a", "job_status": "done"}, expected=first.version)
        assert not one.swap({"job_id": "a", "job_status": "x"}, expected=first.version)
    finally:
        one.close()
        two.close()


def test_a_cursor_of_an_earlier_process_resumes_without_a_skip(
    tmp_path: Path,
) -> None:

    (tmp_path / "jobs").mkdir()
    earlier = FileStore(tmp_path)
    for job_id in ("a", "b", "c"):
        earlier.put({"job_id": job_id, "job_status": "done"})
    cursor = earlier.page(Query(limit=10))[-1].position
    earlier.close()
    # Changed while no process watched: in place by another writer, and
    # through the store.
    write_toolkit_file(tmp_path, "a", "again")
    (tmp_path / "jobs" / "d.json").write_text('{"job_id": "d", "job_status": "new"}')
    for index in (True, False):
        later = FileStore(tmp_path, index=index)
        try:
            resumed = later.page(Query(after=cursor, limit=10))
        finally:
            later.close()
        assert {row.job_id for row in resumed} == {"a", "d"}


def test_scanning_marks_move_on_every_change(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore(tmp_path, index=False)
    marks = [store.mark()]
    write_toolkit_file(tmp_path, "a", "queued")
    marks.append(store.mark())
    write_toolkit_file(tmp_path, "a", "done")
    marks.append(store.mark())
    (tmp_path / "jobs" / "a.json").unlink()
    marks.append(store.mark())
    assert [mark.head for mark in marks] == sorted({mark.head for mark in marks})
    assert store.mark() == marks[-1]
    store.close()


def test_a_file_written_by_another_process_calls_a_subscriber(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore.from_url(f"file://{tmp_path}")
    assert isinstance(store, Notifying)
    called = threading.Event()
    store.subscribe(called.set)
    # A plain open and write, as the Toolkit does; not through the store.
    path = tmp_path / "jobs" / "from-elsewhere.json"
    code = (
        "import sys; f = open(sys.argv[1], 'w');"
        ' f.write(\'{"job_id": "from-elsewhere", "job_status": "done"}\');'
        " f.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    # inotify, then watchdog's threads (which may hold an event ~0.5 s), then
    # the subscriber: generous, for a busy machine.
    assert called.wait(LATENCY)
    assert listing(store) == {"from-elsewhere": "done"}
    store.close()


def test_writes_through_the_store_call_subscribers_and_unsubscribe_stops_them(
    tmp_path: Path,
) -> None:
    store = FileStore.from_url(f"file://{tmp_path}")
    assert isinstance(store, Notifying)
    calls: list[int] = []
    unsubscribe = store.subscribe(lambda: calls.append(1))
    # Called before put returns: the directory does not even exist yet,
    # so no observer event can be what calls it.
    store.put({"job_id": "a", "job_status": "running"})
    assert calls
    unsubscribe()
    unsubscribe()
    seen = len(calls)
    store.put({"job_id": "a", "job_status": "done"})
    assert len(calls) == seen
    store.close()


def test_a_scanning_store_is_not_notifying(tmp_path: Path) -> None:
    scanning = FileStore.from_url(f"file://{tmp_path}?index=off")
    watched = FileStore.from_url(f"file://{tmp_path}")
    # Declared by the type: the change hub polls the mark of the first.
    assert not isinstance(scanning, Notifying) and type(scanning) is FileStore
    assert isinstance(watched, Notifying) and isinstance(watched, WatchedFileStore)
    indexed = FileStore(tmp_path)
    assert not isinstance(indexed, Notifying)
    for store in (scanning, watched, indexed):
        store.close()


def test_a_change_no_event_announced_is_announced_by_the_reconciler(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobs").mkdir()
    store = WatchedFileStore(tmp_path, reconcile_interval=3600)
    assert store.index is not None
    # As when inotify overflows: the events are lost, the files are there.
    store.index._observer.unschedule_all()  # type: ignore[union-attr]
    calls: list[int] = []
    store.subscribe(lambda: calls.append(1))
    store.index.reconcile()
    assert calls == []  # nothing moved: no wake-up
    write_toolkit_file(tmp_path, "missed", "done")
    store.index.reconcile()
    assert calls == [1]
    store.close()


# -- retention: ?expire=delete ------------------------------------------------


def test_a_store_without_expire_delete_is_not_expiring(tmp_path: Path) -> None:
    from jobstatus_backends import store_from_url
    from jobstatus_core import Expiring

    (tmp_path / "jobs").mkdir()
    for options, expires in [
        ("", False),
        ("?index=off", False),
        ("?expire=delete", True),
        ("?index=off&expire=delete", True),
    ]:
        store = store_from_url(f"file://{tmp_path}{options}")
        try:
            assert isinstance(store, Expiring) is expires, options
            assert isinstance(store, Notifying) is ("index=off" not in options)
        finally:
            store.close()
    for store in (FileStore(tmp_path), WatchedFileStore(tmp_path)):
        assert not isinstance(store, Expiring)
        store.close()
    store = FileStore.open(tmp_path, index=False, expire="delete")
    assert isinstance(store, ExpiringFileStore) and isinstance(store, Expiring)
    store.close()
    with pytest.raises(ConfigError, match="expire must be delete"):
        store_from_url(f"file://{tmp_path}?expire=keep")


@pytest.fixture(params=["index", "scan"])
def estore(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ExpiringFileStore]:
    (tmp_path / "jobs").mkdir()
    store = FileStore.open(
        tmp_path,
        index=request.param == "index",
        expire="delete",
        reconcile_interval=0.5,
    )
    assert isinstance(store, ExpiringFileStore)
    yield store
    store.close()


def expire_all(store: ExpiringFileStore, at: float = 1000.0) -> list[Tombstone]:
    return store.expire(store.stale(Stale(before=at)), at=at)


def test_tombstones_live_beside_jobs_never_in_it(
    estore: ExpiringFileStore, tmp_path: Path
) -> None:
    for i in range(5):
        estore.put({"job_id": f"old{i}", "job_status": "done"}, at=10.0)
    estore.put({"job_id": "new", "job_status": "done"})
    assert len(expire_all(estore)) == 5
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == ["new.json"]
    state = sorted(p.name for p in (tmp_path / ".jobstatus").iterdir())
    assert state[:2] == ["lock", "tombstones.sqlite3"]
    old = [f"old{i}" for i in range(5)]
    assert set(estore.tombstones(old)) == set(old)


def test_expire_never_touches_a_name_outside_the_jobs_directory(
    estore: ExpiringFileStore, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.json"
    outside.write_text('{"job_status": "done"}')
    info = outside.stat()
    version = jobfiles.version_of(info, outside.read_bytes())
    row = Row("../secret", '"done"', info.st_mtime, version, 1)
    assert estore.expire([row], at=5.0) == []
    assert outside.exists()


def toolkit_replaces(path: Path, record: dict[str, Any]) -> None:
    """Write a job file as a writer that writes a temp file and renames it."""
    temp = path.with_name(".toolkit.tmp")
    temp.write_text(json.dumps(record))
    os.replace(temp, path)


@pytest.mark.parametrize("when", ["in-place", "replaced-before", "replaced-after"])
def test_a_toolkit_rewrite_during_a_purge_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore.open(tmp_path, expire="delete")  # the real observer
    assert isinstance(store, ExpiringWatchedFileStore) and store.index is not None
    try:
        write_toolkit_file(tmp_path, "a", "done")
        os.utime(tmp_path / "jobs" / "a.json", (10.0, 10.0))
        wait_for(lambda: listing(store) == {"a": "done"}, LATENCY)
        rows = store.stale(Stale(before=100.0))
        assert [row.job_id for row in rows] == ["a"]
        path = tmp_path / "jobs" / "a.json"
        again = {"job_id": "a", "job_status": "running", "step": when}
        move = jobfiles._rename_aside

        def racing_toolkit(src: str, dst: str) -> None:
            # Between "found stale" and "removed": the Toolkit writes.
            if when == "in-place":
                # Opened (and truncated) before the move, written after it.
                with path.open("w") as file:
                    move(src, dst)
                    json.dump(again, file)
            elif when == "replaced-before":
                toolkit_replaces(path, again)
                move(src, dst)
            else:
                move(src, dst)
                toolkit_replaces(path, again)

        monkeypatch.setattr(jobfiles, "_rename_aside", racing_toolkit)
        expired = store.expire(rows, at=500.0)
        monkeypatch.undo()
        # The rewritten file is the job now, in every case.
        assert store.get("a") == again
        assert store.tombstones(["a"]) == {}
        assert [p.name for p in (tmp_path / "jobs").iterdir()] == ["a.json"]
        # The version that went stale was removed only when it was moved
        # before the rewrite landed at the job's name.
        assert len(expired) == (1 if when == "replaced-after" else 0)
        wait_for(lambda: listing(store) == {"a": "running"}, LATENCY)
        assert store.stale(Stale(before=100.0)) == []
    finally:
        store.close()


def test_a_toolkit_file_for_an_expired_job_makes_it_alive(
    estore: ExpiringFileStore, tmp_path: Path
) -> None:
    estore.put({"job_id": "a", "job_status": "done"}, at=10.0)
    (tomb,) = expire_all(estore)
    assert estore.buried(Query()) == [tomb]
    write_toolkit_file(tmp_path, "a", "queued")
    wait_for(lambda: listing(estore) == {"a": "queued"}, LATENCY)
    assert estore.tombstones(["a"]) == {}
    assert estore.buried(Query()) == []
    # Dropped, not only hidden: deleting the file now leaves an unknown job.
    (tmp_path / "jobs" / "a.json").unlink()
    assert estore.tombstones(["a"]) == {}


PURGER = r"""
import json, sys
from jobstatus_backends.filesystem import FileStore
from jobstatus_core import Stale

store = FileStore.open(sys.argv[1], index=sys.argv[2] == "index", expire="delete")
expired = []
while True:
    rows = store.stale(Stale(before=1000.0, limit=7))
    if not rows:
        break
    expired += [[t.job_id, t.position] for t in store.expire(rows, at=2000.0)]
store.close()
print(json.dumps(expired))
"""


def test_two_processes_purging_one_directory_expire_each_job_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore.open(tmp_path, expire="delete")
    assert isinstance(store, ExpiringFileStore)
    ids = [f"j{i:03}" for i in range(150)]
    for i, job_id in enumerate(ids):
        store.put({"job_id": job_id, "job_status": "done"}, at=float(i))
    purgers = [
        subprocess.Popen(
            [sys.executable, "-c", PURGER, str(tmp_path), kind],
            stdout=subprocess.PIPE,
        )
        for kind in ("index", "scan")
    ]
    results = [json.loads(purger.communicate()[0]) for purger in purgers]
    assert all(purger.returncode == 0 for purger in purgers)
    expired = [job_id for result in results for job_id, _ in result]
    assert sorted(expired) == ids  # each once, by one of them
    positions = [position for result in results for _, position in result]
    assert len(set(positions)) == len(ids)
    # This process learns of them: its files are gone, its mark moves past
    # every tombstone, and the feed sees them all.
    wait_for(lambda: listing(store) == {}, LATENCY)
    assert store.mark().head >= max(positions)
    buried = store.buried(Query(limit=1000))
    assert sorted(t.job_id for t in buried) == ids
    assert os.listdir(tmp_path / "jobs") == []
    store.close()


@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_write_reaches_the_disk_before_it_shows(
    tmp_path: Path, durable: bool
) -> None:
    """A disk that fails to flush fails a durable write, which leaves the old
    record and no temp file; a write with ``durable=off`` never waits for it."""
    store = FileStore(tmp_path, index=False, durable=durable)
    store.put({"job_id": "j", "job_status": "queued"})

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with mock.patch("os.fsync", failing):
        if durable:
            with pytest.raises(StoreError, match="could not write job j"):
                store.put({"job_id": "j", "job_status": "done"})
        else:
            store.put({"job_id": "j", "job_status": "done"})
    assert store.get("j") == {
        "job_id": "j",
        "job_status": "queued" if durable else "done",
    }
    assert os.listdir(tmp_path / "jobs") == ["j.json"]
    store.close()


# -- read_text's kept answers (keptrecords) ---------------------------------


def kept_store(tmp_path: Path, *, index: bool = True, **options: Any) -> FileStore:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    return FileStore(tmp_path, index=index, reconcile_interval=0.5, **options)


@pytest.fixture
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as settled: what is kept shows at once."""
    monkeypatch.setattr("jobstatus_backends.filesystem.SETTLED_NS", -(10**18))


@pytest.mark.parametrize("index", [True, False], ids=["index", "scan"])
def test_read_text_is_the_records_answer_text(tmp_path: Path, index: bool) -> None:
    store = kept_store(tmp_path, index=index)
    write_toolkit_file(tmp_path, "a", "done", response={"é": [1, 2.5, None]})
    found = store.read_text("a")
    assert found is not None
    row, text = found
    assert text == json.dumps(store.read("a").record, separators=(",", ":"))  # type: ignore[union-attr]
    assert (row.job_id, row.status, row.record) == ("a", '"done"', None)
    assert store.read_text("nope") is None
    assert store.read_text("../a") is None
    store.close()


def test_a_settled_file_is_answered_from_memory_until_it_changes(
    tmp_path: Path, settled_at_once: None
) -> None:
    store = kept_store(tmp_path)
    write_toolkit_file(tmp_path, "a", "running")
    reads = mock.Mock(wraps=jobfiles.read_job)
    with mock.patch.object(jobfiles, "read_job", reads):
        first = store.read_text("a")
        assert "a" not in store._kept  # type: ignore[operator]  # asked once
        assert store.read_text("a") == first
        assert "a" in store._kept  # type: ignore[operator]
        assert reads.call_count == 2
        assert store.read_text("a") == first
        assert reads.call_count == 2  # an open and fstat, no read
        write_toolkit_file(tmp_path, "a", "done", extra="longer now")
        changed = store.read_text("a")
        assert reads.call_count == 3
    assert changed is not None and json.loads(changed[1])["job_status"] == "done"
    assert changed[0].version != first[0].version  # type: ignore[index]
    store.put({"job_id": "a", "job_status": "again"})
    assert json.loads(store.read_text("a")[1])["job_status"] == "again"  # type: ignore[index]
    os.unlink(tmp_path / "jobs" / "a.json")
    assert store.read_text("a") is None
    store.close()


def test_a_fresh_file_is_read_every_time(tmp_path: Path) -> None:
    """A file changed in the last seconds may be rewritten within one tick
    of the file system's clock at the same size, its fingerprint unmoved: it
    is not kept, so a same-size rewrite right after a read is seen."""
    store = kept_store(tmp_path)
    for status in ("aaaa", "bbbb", "cccc", "dddd"):
        write_toolkit_file(tmp_path, "a", status)  # in place, same size
        for _ in range(2):  # kept, if ever, from the second read
            assert json.loads(store.read_text("a")[1])["job_status"] == status  # type: ignore[index]
    assert "a" not in store._kept  # type: ignore[operator]
    store.close()


def test_the_cache_is_bounded_and_can_be_turned_off(
    tmp_path: Path, settled_at_once: None
) -> None:
    store = kept_store(tmp_path, cache_bytes=64 << 10)
    for i in range(300):
        write_toolkit_file(tmp_path, f"j{i}", "done", pad="x" * 1000)
        assert store.read_text(f"j{i}") is not None
        assert store.read_text(f"j{i}") is not None  # kept from the second
    kept = store._kept
    assert kept is not None and kept.size <= 64 << 10 and 0 < len(kept) < 300
    assert "j299" in kept and "j0" not in kept  # the oldest went first
    store.close()
    off = FileStore.from_url(f"file://{tmp_path}?cache=0&index=off")
    assert off._kept is None and off.read_text("j1") is not None
    off.close()
    sized = FileStore.from_url(f"file://{tmp_path}?cache=1000000&index=off")
    assert sized._kept is not None and sized._kept.max_bytes == 1_000_000
    sized.close()
    for bad in ("-1", "lots", "1e6", "²", "65535", "9" * 5000):
        with pytest.raises(ConfigError, match="cache") as failed:
            FileStore.from_url(f"file://{tmp_path}?cache={bad}")
        assert "must be 0 (no cache) or a whole number of bytes >= 65536" in str(
            failed.value
        )


def test_a_kept_answer_keeps_the_jobs_position_when_the_index_is_rebuilt(
    tmp_path: Path, settled_at_once: None
) -> None:
    """The jobs directory moved away and back: the index forgets every job
    and places them again, at new positions, their files unchanged."""
    store = kept_store(tmp_path)
    write_toolkit_file(tmp_path, "a", "done")
    assert store.read_text("a") is not None
    assert store.read_text("a") is not None
    assert "a" in store._kept  # type: ignore[operator]
    os.rename(tmp_path / "jobs", tmp_path / "away")
    wait_for(lambda: listing(store) == {}, LATENCY)
    os.rename(tmp_path / "away", tmp_path / "jobs")
    wait_for(lambda: listing(store) == {"a": "done"}, LATENCY)
    row = store.read("a")
    found = store.read_text("a")
    assert row is not None and found is not None
    assert found[0] == dataclasses.replace(row, record=None)
    store.close()
