"""The file index's snapshot: taken at start only for files as they were,
ignored when it is not this directory's or not whole."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobstatus_backends import fssnapshot, jobfiles, jobtable
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.jobcolumns import FINGERPRINT, FP_SIZE, JobColumns, make_version
from jobstatus_core import Query

from .helpers import ServeProcess, clean_env, wait_for

pytestmark = pytest.mark.filesystem

NEVER = 3600.0
#: How long a write through another store may take to show through events
#: (generous, for a busy machine; only ever awaited for what must come).
EVENT_LATENCY = 10.0
JOBS = [f"job-{i}" for i in range(20)]


@pytest.fixture
def job_reads() -> Iterator[list[str]]:
    """Job files opened from here on, by name (an audit hook on ``open``;
    hooks cannot be removed: it stops recording when the test ends)."""
    names: list[str] = []
    recording = [True]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if recording[0] and event == "open" and isinstance(args[0], str):
            parent, name = os.path.split(args[0])
            if os.path.basename(parent) == "jobs" and name.endswith(".json"):
                names.append(name)

    sys.addaudithook(audit)
    yield names
    recording[0] = False


@pytest.fixture
def trust_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written just now are trusted: a test cannot wait for its files'
    ctimes to age past ``RACY_NS`` (its own test uses the real one)."""
    monkeypatch.setattr(fssnapshot, "RACY_NS", 0)


def write_job_file(jobs: Path, job_id: str, status: Any) -> None:
    """In place, as the Toolkit writes."""
    (jobs / f"{job_id}.json").write_text(
        json.dumps({"job_id": job_id, "job_status": status})
    )


def fill(root: Path) -> Path:
    jobs = root / "jobs"
    jobs.mkdir()
    for job_id in JOBS:
        write_job_file(jobs, job_id, "done")
    return jobs


def open_store(root: Path) -> FileStore:
    return FileStore(root, reconcile_interval=NEVER)


def listing(store: FileStore) -> dict[str, Any]:
    return dict(store.changed_since(0))


def snapshot_of(root: Path) -> Path:
    return root / fssnapshot.SNAPSHOT_PATH


def first_run(root: Path) -> tuple[dict[str, Any], int]:
    """Start, list, close (which writes the snapshot); the listing and head."""
    store = open_store(root)
    try:
        return listing(store), store.mark().head
    finally:
        store.close()


@pytest.mark.usefixtures("trust_at_once")
def test_a_start_takes_unchanged_files_from_the_snapshot(
    tmp_path: Path, job_reads: list[str]
) -> None:
    fill(tmp_path)
    before, head = first_run(tmp_path)
    assert snapshot_of(tmp_path).is_file()
    assert not [p for p in os.listdir(tmp_path / "jobs") if "index" in p]
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        assert job_reads == []
        assert listing(store) == before == {job_id: "done" for job_id in JOBS}
        assert store.mark().head == head
        # Rows as a read gives them: get answers the same version.
        row = store.page(Query(limit=1))[0]
        read = store.read(row.job_id)
        assert read is not None and read.version == row.version
    finally:
        store.close()


@pytest.mark.usefixtures("trust_at_once")
def test_files_changed_added_and_removed_between_runs_are_seen(
    tmp_path: Path, job_reads: list[str]
) -> None:
    jobs = fill(tmp_path)
    first_run(tmp_path)
    write_job_file(jobs, "job-1", "failed, and a longer status")
    write_job_file(jobs, "new", "queued")
    (jobs / "job-2.json").unlink()
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        assert sorted(job_reads) == ["job-1.json", "new.json"]
        expected = {job_id: "done" for job_id in JOBS if job_id != "job-2"}
        expected |= {"job-1": "failed, and a longer status", "new": "queued"}
        assert listing(store) == expected
    finally:
        store.close()


@pytest.mark.usefixtures("trust_at_once")
def test_a_rewrite_of_the_same_size_with_its_mtime_set_back_is_read(
    tmp_path: Path, job_reads: list[str]
) -> None:
    jobs = fill(tmp_path)
    first_run(tmp_path)
    path = jobs / "job-3.json"
    was = path.stat()
    write_job_file(jobs, "job-3", "gone")  # as long as "done"
    os.utime(path, ns=(was.st_atime_ns, was.st_mtime_ns))  # touch -d back
    now = path.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (
        was.st_ino,
        was.st_size,
        was.st_mtime_ns,
    )
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        # Only the ctime, which no writer can set, tells it changed.
        assert job_reads == ["job-3.json"]
        assert listing(store)["job-3"] == "gone"
    finally:
        store.close()


def test_files_changed_just_before_the_snapshot_are_read_again(
    tmp_path: Path, job_reads: list[str]
) -> None:
    # Within one clock tick a rewrite of the same size keeps the
    # fingerprint: files younger than RACY_NS at the snapshot are not trusted.
    fill(tmp_path)
    first_run(tmp_path)
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        assert sorted(job_reads) == sorted(f"{job_id}.json" for job_id in JOBS)
    finally:
        store.close()


def assert_every_file_read(
    root: Path, job_reads: list[str], caplog: pytest.LogCaptureFixture, why: str
) -> None:
    job_reads.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jobstatus.filesystem"):
        store = open_store(root)
    try:
        assert len(job_reads) == len(JOBS)
        assert listing(store) == {job_id: "done" for job_id in JOBS}
    finally:
        store.close()
    ignored = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(ignored) == 1, caplog.records
    assert why in ignored[0]


@pytest.mark.usefixtures("trust_at_once")
def test_a_snapshot_of_another_directory_is_ignored(
    tmp_path: Path, job_reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    fill(first)
    first_run(first)
    # The same jobs, copied with their mtimes and sizes (cp -a).
    shutil.copytree(first, second)
    assert_every_file_read(second, job_reads, caplog, "another jobs directory")


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]


def other_format(data: bytes) -> bytes:
    start = len(fssnapshot.MAGIC)
    return data[:start] + (99).to_bytes(4, "little") + data[start + 4 :]


def garbage(data: bytes) -> bytes:
    return b"not a snapshot"


@pytest.mark.usefixtures("trust_at_once")
@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (truncated, "digest"),
        (flipped, "digest"),
        (other_format, "format 99"),
        (garbage, "truncated"),
        (lambda data: b"", "truncated"),
    ],
)
def test_a_corrupt_snapshot_is_ignored(
    tmp_path: Path,
    job_reads: list[str],
    caplog: pytest.LogCaptureFixture,
    spoil: Any,
    why: str,
) -> None:
    fill(tmp_path)
    first_run(tmp_path)
    path = snapshot_of(tmp_path)
    path.write_bytes(spoil(path.read_bytes()))
    assert_every_file_read(tmp_path, job_reads, caplog, why)


@pytest.mark.usefixtures("trust_at_once")
def test_several_processes_write_it_and_the_last_one_wins(
    tmp_path: Path, job_reads: list[str]
) -> None:
    jobs = fill(tmp_path)
    one, two = open_store(tmp_path), open_store(tmp_path)
    one.put({"job_id": "one", "job_status": "done"})
    one.close()
    wait_for(lambda: "one" in listing(two), EVENT_LATENCY)
    two.put({"job_id": "two", "job_status": "done"})
    two.close()
    assert not [
        name for name in os.listdir(snapshot_of(tmp_path).parent) if ".tmp" in name
    ]
    assert len(os.listdir(jobs)) == len(JOBS) + 2
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        assert job_reads == []
        assert {"one", "two"} <= set(listing(store))
    finally:
        store.close()


@pytest.mark.usefixtures("trust_at_once")
def test_a_file_written_during_the_directory_check_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = fill(tmp_path)
    first_run(tmp_path)
    listed = jobtable.match_listing

    def list_then_write(*args: Any) -> Any:
        # The Toolkit writes a job just after the listing passed it by.
        matched = listed(*args)
        write_job_file(jobs, "late", "running")
        return matched

    monkeypatch.setattr(jobtable, "match_listing", list_then_write)
    store = open_store(tmp_path)
    monkeypatch.setattr(jobtable, "match_listing", listed)
    try:
        wait_for(lambda: listing(store).get("late") == "running", EVENT_LATENCY)
    finally:
        store.close()


def test_an_unwritable_snapshot_is_logged_and_serving_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path)
    # A file where the snapshot's directory would be.
    (tmp_path / ".jobstatus").write_text("")
    store = open_store(tmp_path)
    assert len(listing(store)) == len(JOBS)
    with caplog.at_level(logging.WARNING, logger="jobstatus.filesystem"):
        store.close()
    assert any(
        "could not write the index snapshot" in r.getMessage() for r in caplog.records
    )


def rewrite(jobs: Path, job_id: str, status: str, *, mtime_ns: int | None) -> None:
    """In place, then its mtime set (``touch -d``) when given."""
    path = jobs / f"{job_id}.json"
    write_job_file(jobs, job_id, status)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def same_size_other_mtime(jobs: Path, was: os.stat_result) -> str:
    rewrite(jobs, "job-4", "gone", mtime_ns=was.st_mtime_ns - 10**9)
    return "gone"


def same_mtime_other_size(jobs: Path, was: os.stat_result) -> str:
    rewrite(jobs, "job-4", "a longer status", mtime_ns=was.st_mtime_ns)
    return "a longer status"


def new_inode(jobs: Path, was: os.stat_result) -> str:
    # A new file of the same size and mtime renamed over it.
    temp = jobs / ".job-4.tmp"
    temp.write_text(json.dumps({"job_id": "job-4", "job_status": "gone"}))
    os.utime(temp, ns=(was.st_mtime_ns, was.st_mtime_ns))
    os.replace(temp, jobs / "job-4.json")
    return "gone"


@pytest.mark.usefixtures("trust_at_once")
@pytest.mark.parametrize(
    "change", [same_size_other_mtime, same_mtime_other_size, new_inode]
)
def test_a_file_changed_while_no_server_ran_is_read_again(
    tmp_path: Path, job_reads: list[str], change: Any
) -> None:
    jobs = fill(tmp_path)
    first_run(tmp_path)
    status = change(jobs, (jobs / "job-4.json").stat())
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        assert job_reads == ["job-4.json"]
        assert listing(store) == {
            job_id: status if job_id == "job-4" else "done" for job_id in JOBS
        }
    finally:
        store.close()


@pytest.mark.usefixtures("trust_at_once")
@pytest.mark.parametrize("field", range(4))
def test_each_number_of_the_fingerprint_is_compared(
    tmp_path: Path, job_reads: list[str], field: int
) -> None:
    # The snapshot remembers job-7 with one of inode, size, mtime and ctime
    # other than its file's: that file, and only it, is read.
    jobs = fill(tmp_path)
    first_run(tmp_path)
    path = str(snapshot_of(tmp_path))
    identity = fssnapshot.identity_of(str(jobs))
    loaded = fssnapshot.load(path, identity)
    assert loaded is not None
    rows = loaded.columns
    row = rows.job_ids.index("job-7")
    numbers = list(FINGERPRINT.unpack_from(rows.fingerprints, row * FP_SIZE))
    numbers[field] += 1
    fingerprints = bytearray(rows.fingerprints)
    FINGERPRINT.pack_into(fingerprints, row * FP_SIZE, *numbers)
    taken_ns = loaded.trusted_before_ns + fssnapshot.RACY_NS
    fssnapshot.write(
        path, identity, taken_ns, rows._replace(fingerprints=bytes(fingerprints))
    )
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        assert job_reads == ["job-7.json"]
        assert listing(store) == {job_id: "done" for job_id in JOBS}
    finally:
        store.close()


@pytest.mark.usefixtures("trust_at_once")
def test_a_snapshot_of_the_earlier_format_is_ignored_and_written_anew(
    tmp_path: Path, job_reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path)
    first_run(tmp_path)
    path = snapshot_of(tmp_path)
    data = path.read_bytes()
    start = len(fssnapshot.MAGIC)
    path.write_bytes(data[:start] + (1).to_bytes(4, "little") + data[start + 4 :])
    assert_every_file_read(tmp_path, job_reads, caplog, "format 1, not 2")
    job_reads.clear()
    store = open_store(tmp_path)
    try:
        assert job_reads == []
        assert listing(store) == {job_id: "done" for job_id in JOBS}
    finally:
        store.close()


def test_rows_keep_versions_of_another_form_as_they_are(tmp_path: Path) -> None:
    rows = JobColumns()
    fingerprint = jobfiles.Fingerprint(7, 10, 5, -5)
    made = make_version(7, -5, bytes(range(8)))
    rows.set("usual", fingerprint, 1.0, "7-3-0001020304050607", '"done"', 1)
    rows.set("odd", fingerprint, 2.0, made, '"done"', 2)
    rows.set("other", fingerprint, 3.0, "not-ours", None, 3)
    assert [rows.version_of(j) for j in ("usual", "odd", "other")] == [
        "7-3-0001020304050607",
        made,
        "not-ours",
    ]
    (tmp_path / "jobs").mkdir()
    path = str(tmp_path / "snapshot")
    identity = fssnapshot.identity_of(str(tmp_path / "jobs"))
    fssnapshot.write(path, identity, 0, rows.columns())
    loaded = fssnapshot.load(path, identity)
    assert loaded is not None
    again = JobColumns()
    again.load(loaded.columns, array("q", [1, 2, 3]), 3)
    assert [again.get(j) for j in ("usual", "odd", "other")] == [
        rows.get(j) for j in ("usual", "odd", "other")
    ]


def members_of(root: Path) -> list[str]:
    store = open_store(root)
    try:
        return list(store.window(0).members)
    finally:
        store.close()


@pytest.mark.usefixtures("trust_at_once")
def test_the_time_order_a_snapshot_keeps_is_the_one_a_full_build_makes(
    tmp_path: Path, job_reads: list[str]
) -> None:
    jobs = fill(tmp_path)
    # Three mtimes among twenty files (a burst in one clock tick), set in
    # an order that is neither the job ids' nor the writes'.
    for i, job_id in enumerate(reversed(JOBS)):
        os.utime(jobs / f"{job_id}.json", (1000 + i % 3, 1000 + i % 3))

    def expected(job_ids: list[str]) -> list[str]:
        at = {job_id: (jobs / f"{job_id}.json").stat().st_mtime for job_id in job_ids}
        return [
            f'"{job_id}":"done"' for job_id in sorted(job_ids, key=lambda j: (at[j], j))
        ]

    assert members_of(tmp_path) == expected(JOBS)  # a full build
    job_reads.clear()
    assert members_of(tmp_path) == expected(JOBS)  # the snapshot's order
    assert job_reads == []
    (jobs / "job-5.json").unlink()
    left = [job_id for job_id in JOBS if job_id != "job-5"]
    assert members_of(tmp_path) == expected(left)  # some of its rows
    assert members_of(tmp_path) == expected(left)
    assert job_reads == []


def test_the_starts_listing_finds_the_job_files_a_scan_finds(
    tmp_path: Path, trust_at_once: None
) -> None:
    jobs = fill(tmp_path)
    first_run(tmp_path)
    write_job_file(jobs, "job-3", "running")  # changed since the snapshot
    write_job_file(jobs, "new", "queued")  # not in it
    (jobs / "job-4.json").unlink()  # gone
    # Not job files, some named like one the snapshot knows.
    (jobs / "job-5.json.tmp").write_text("{}")
    (jobs / ".job-6.json").write_text("{}")
    (jobs / "job-7x.jso").write_text("{}")
    (jobs / "dir.json").mkdir()
    (jobs / "link.json").symlink_to(jobs / "job-8.json")
    os.link(jobs / "job-9.json", jobs / "job-9abcde")  # job-9 and 5 more
    known = fssnapshot.load(
        str(tmp_path / fssnapshot.SNAPSHOT_PATH), fssnapshot.identity_of(str(jobs))
    )
    assert known is not None
    ids = known.columns.job_ids
    row_of = dict(zip(ids, range(len(ids)), strict=True))
    matched = jobtable.match_listing(
        str(jobs), known.columns, row_of, known.trusted_before_ns
    )
    assert matched is not None
    taken, unmatched = matched
    taken_ids = {job_id for job_id, t in zip(ids, taken, strict=True) if t}
    # job-9's hard link moved its ctime: it is read again, as a scan would.
    assert taken_ids == set(JOBS) - {"job-3", "job-4", "job-9"}
    assert sorted(job_id for job_id, _ in unmatched) == ["job-3", "job-9", "new"]
    assert taken_ids | {job_id for job_id, _ in unmatched} == {
        job_id for job_id, _ in jobfiles.scan(str(jobs))
    }
    assert jobtable.match_listing(str(tmp_path / "none"), known.columns, {}, 0) is None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_stopped_by_sigterm_writes_the_snapshot(
    tmp_path: Path, workers: str
) -> None:
    # systemd and docker stop with SIGTERM: uvicorn then raises it again
    # after its shutdown, and a worker of --workers N never reached a close
    # of its store. The next start would read every file again.
    storage = tmp_path / "storage"
    (storage / "jobs").mkdir(parents=True)
    for n in range(20):
        (storage / "jobs" / f"j{n}.json").write_text(
            json.dumps({"job_id": f"j{n}", "job_status": "done", "response": None})
        )
    env = clean_env(LOCAL_STORAGE_PATH=str(storage), API_KEY="k")
    running = ServeProcess(tmp_path, env, "--workers", workers)
    snapshot = storage / fssnapshot.SNAPSHOT_PATH
    try:
        # A job the serving index reads: its snapshot, if any yet (the
        # parent of --workers N closes the store it checked the settings
        # with), does not hold it.
        (storage / "jobs" / "new.json").write_text(
            json.dumps({"job_id": "new", "job_status": "done", "response": None})
        )

        def served() -> bool:
            answer = httpx.post(
                running.url + "/v1/toolkit/jobs/status", headers={"x-api-key": "k"}
            )
            return "new" in answer.json()["response"]

        for _ in range(int(workers) * 4):  # each worker's index, likely
            wait_for(served, 10)
        before = snapshot.stat().st_mtime_ns if snapshot.exists() else 0
    finally:
        running.stop()
    assert snapshot.exists() and snapshot.stat().st_mtime_ns > before


def test_a_snapshot_that_cannot_be_written_is_said_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / ".jobstatus").write_text("")  # where its directory goes
    with caplog.at_level(logging.WARNING, logger="jobstatus.filesystem"):
        store = FileStore(tmp_path)
    store.close()
    said = [
        r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()
    ]
    assert len(said) == 1 and "every start reads every job file" in said[0]
