"""The file store's index: symlinked layouts, bad files, oversized files."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobstatus_backends import jobfiles
from jobstatus_backends.fileexpiry import ExpiringFileStore
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.jobcolumns import JobColumns, make_version
from jobstatus_core import ConfigError, Query, Stale, StoreError, jsontext

from .helpers import stat_with_size, wait_for

pytestmark = pytest.mark.filesystem

# Events, not the reconciler, must bring a new file in: the round never comes
# during a test, and a file written by another process shows within this
# (generous, for a busy machine; only ever awaited for what must come).
EVENT_LATENCY = 10.0
NEVER = 3600.0


def write_job_file(jobs: Path, job_id: str, status: Any, **extra: Any) -> None:
    """Write a job file in place, as the Toolkit does (not atomically)."""
    record = {"job_id": job_id, "job_status": status, **extra}
    (jobs / f"{job_id}.json").write_text(json.dumps(record))


def listing(store: FileStore) -> dict[str, Any]:
    return dict(store.changed_since(0))


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Every path the process opens from here on, seen by an audit hook.

    Audit hooks cannot be removed: the hook stays, and stops recording when
    the test ends.
    """
    paths: list[str] = []
    recording = [True]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if recording[0] and event == "open" and isinstance(args[0], str):
            paths.append(args[0])

    sys.addaudithook(audit)
    yield paths
    recording[0] = False


def opens_of(paths: list[str], name: str) -> int:
    return sum(1 for path in paths if os.path.basename(path) == name)


# -- symlinks -----------------------------------------------------------------


def test_jobs_directory_that_is_a_symlink_is_watched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    root = tmp_path / "storage"
    root.mkdir()
    (root / "jobs").symlink_to(target)
    store = FileStore(root, reconcile_interval=NEVER)
    try:
        write_job_file(target, "linked", "done")
        wait_for(lambda: listing(store) == {"linked": "done"}, EVENT_LATENCY)
    finally:
        store.close()


def test_a_file_whose_time_alone_changes_moves_in_and_out_of_the_window(
    tmp_path: Path,
) -> None:
    """``touch`` and ``cp -p`` change a file's time without writing it: the
    listing follows within the events' latency, not the reconciler's round
    (30 s by default; never here)."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job_file(jobs, "touched", "done")
    hours_ago = time.time() - 7200
    os.utime(jobs / "touched.json", (hours_ago, hours_ago))
    store = FileStore(tmp_path, reconcile_interval=NEVER)

    def recent() -> dict[str, Any]:
        return dict(store.changed_since(time.time() - 600))

    try:
        assert recent() == {}
        os.utime(jobs / "touched.json")  # now
        wait_for(lambda: recent() == {"touched": "done"}, EVENT_LATENCY)
        os.utime(jobs / "touched.json", (hours_ago, hours_ago))
        wait_for(lambda: recent() == {}, EVENT_LATENCY)
    finally:
        store.close()


def test_root_that_is_a_symlink_sees_jobs_created_after_start(tmp_path: Path) -> None:
    target = tmp_path / "storage"
    target.mkdir()
    root = tmp_path / "LOCAL_STORAGE_PATH"
    root.symlink_to(target)
    store = FileStore(root, reconcile_interval=NEVER)
    try:
        assert listing(store) == {}
        (target / "jobs").mkdir()
        write_job_file(target / "jobs", "late", "queued")
        wait_for(lambda: listing(store) == {"late": "queued"}, EVENT_LATENCY)
        write_job_file(target / "jobs", "later", "done")
        wait_for(
            lambda: listing(store) == {"late": "queued", "later": "done"},
            EVENT_LATENCY,
        )
    finally:
        store.close()


def test_a_retargeted_root_link_is_followed_at_the_next_reconcile(
    tmp_path: Path,
) -> None:
    for name, job_id in (("old", "from-old"), ("new", "from-new")):
        (tmp_path / name / "jobs").mkdir(parents=True)
        write_job_file(tmp_path / name / "jobs", job_id, "done")
    root = tmp_path / "LOCAL_STORAGE_PATH"
    root.symlink_to(tmp_path / "old")
    store = FileStore(root, reconcile_interval=NEVER)
    try:
        assert listing(store) == {"from-old": "done"}
        # Retargeted as `ln -sfn` does it: a new link renamed over the old.
        (tmp_path / "link.tmp").symlink_to(tmp_path / "new")
        os.replace(tmp_path / "link.tmp", root)
        assert store.index is not None
        store.index.reconcile()
        assert listing(store) == {"from-new": "done"}
        # ... and the new target's events are watched from then on.
        write_job_file(tmp_path / "new" / "jobs", "next", "queued")
        wait_for(
            lambda: listing(store) == {"from-new": "done", "next": "queued"},
            EVENT_LATENCY,
        )
    finally:
        store.close()


def test_a_root_renamed_into_the_place_of_another_is_followed(tmp_path: Path) -> None:
    """A backup put back by rename: the watches follow the directory renamed
    away and hear nothing of the new one; a query looks where the path
    leads, at most every half second."""
    root = tmp_path / "storage"
    (root / "jobs").mkdir(parents=True)
    write_job_file(root / "jobs", "from-old", "done")
    (tmp_path / "backup" / "jobs").mkdir(parents=True)
    write_job_file(tmp_path / "backup" / "jobs", "from-backup", "done")
    store = FileStore(root, reconcile_interval=NEVER)
    try:
        assert listing(store) == {"from-old": "done"}
        os.rename(root, tmp_path / "aside")
        os.rename(tmp_path / "backup", root)
        wait_for(lambda: listing(store) == {"from-backup": "done"}, EVENT_LATENCY)
        # The new root's jobs directory is watched from then on.
        write_job_file(root / "jobs", "next", "queued")
        wait_for(
            lambda: listing(store) == {"from-backup": "done", "next": "queued"},
            EVENT_LATENCY,
        )
        # So is the new root itself: its jobs directory replaced by rename.
        (root / "jobs.new").mkdir()
        write_job_file(root / "jobs.new", "renamed", "running")
        os.rename(root / "jobs", tmp_path / "old-jobs")
        os.rename(root / "jobs.new", root / "jobs")
        wait_for(lambda: listing(store) == {"renamed": "running"}, EVENT_LATENCY)
    finally:
        store.close()


def test_a_root_that_is_gone_is_quietly_absent_until_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No observer can watch a root that is gone (an unmounted share):
    queries answer without it, and log nothing each time."""
    root = tmp_path / "storage"
    (root / "jobs").mkdir(parents=True)
    write_job_file(root / "jobs", "a", "done")
    store = FileStore(root, reconcile_interval=NEVER)
    try:
        assert listing(store) == {"a": "done"}
        os.rename(root, tmp_path / "unmounted")
        for _ in range(3):
            time.sleep(0.6)  # past the index's look at its paths
            assert listing(store) == {}
        assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
        (root / "jobs").mkdir(parents=True)
        write_job_file(root / "jobs", "b", "queued")
        wait_for(lambda: listing(store) == {"b": "queued"}, EVENT_LATENCY)
    finally:
        store.close()


def test_a_retargeted_jobs_link_is_followed(tmp_path: Path) -> None:
    for name, job_id in (("old", "from-old"), ("new", "from-new")):
        (tmp_path / name).mkdir()
        write_job_file(tmp_path / name, job_id, "done")
    root = tmp_path / "storage"
    root.mkdir()
    (root / "jobs").symlink_to(tmp_path / "old")
    store = FileStore(root, reconcile_interval=NEVER)
    try:
        assert listing(store) == {"from-old": "done"}
        (root / "jobs.tmp").symlink_to(tmp_path / "new")
        os.replace(root / "jobs.tmp", root / "jobs")
        wait_for(lambda: listing(store) == {"from-new": "done"}, EVENT_LATENCY)
        write_job_file(tmp_path / "new", "next", "queued")
        wait_for(
            lambda: listing(store) == {"from-new": "done", "next": "queued"},
            EVENT_LATENCY,
        )
    finally:
        store.close()


# -- bad files ----------------------------------------------------------------


@pytest.fixture(params=["index", "scan"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., FileStore]]:
    stores: list[FileStore] = []

    def make(**options: Any) -> FileStore:
        store = FileStore(
            tmp_path,
            index=request.param == "index",
            reconcile_interval=NEVER,
            **options,
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def reconcile(store: FileStore) -> None:
    """One round of what the index does every ``reconcile`` seconds."""
    if store.index is not None:
        store.index.reconcile()


def test_reads_by_id_wait_for_a_bad_file_once_per_change(
    tmp_path: Path, opened: list[str]
) -> None:
    """A batch polled every second names a file that stays broken: its
    waits (150 ms on a store thread) come once, not at every poll."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "broken.json").write_text('{"job_id": "broken", "job_st')
    write_job_file(jobs, "good", "done")
    store = FileStore(tmp_path, reconcile_interval=NEVER)
    try:
        opened.clear()
        assert list(store.read_many(["good", "broken"])) == ["good"]
        first = opens_of(opened, "broken.json")
        assert first == 1 + len(jobfiles.RETRY_DELAYS_SECONDS)
        for _ in range(3):
            assert list(store.read_many(["good", "broken"])) == ["good"]
        assert opens_of(opened, "broken.json") == first + 3
        # Changed, it is read again after the waits.
        (jobs / "broken.json").write_text("")
        opened.clear()
        assert list(store.read_many(["broken"])) == []
        assert opens_of(opened, "broken.json") == 1 + len(jobfiles.RETRY_DELAYS_SECONDS)
    finally:
        store.close()


def test_a_bad_file_is_read_and_logged_once_per_change(
    make_store: Callable[..., FileStore],
    tmp_path: Path,
    opened: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for i in range(20):
        (jobs / f"empty-{i}.json").touch()
    write_job_file(jobs, "good", "done")
    caplog.set_level(logging.WARNING, "jobstatus.filesystem")
    opened.clear()  # the files' writing opened them
    store = make_store()
    for _ in range(3):
        assert listing(store) == {"good": "done"}
        reconcile(store)
    # One read each (no retry), one line each (no traceback), whatever the
    # number of listings and reconcile rounds.
    assert [opens_of(opened, f"empty-{i}.json") for i in range(20)] == [1] * 20
    lines = [r for r in caplog.records if "empty-" in r.getMessage()]
    assert len(lines) == 20 and not any(r.exc_info for r in lines)
    # A change is read again (the writer's events may each cause a read)
    # and logged once: still broken. Then whole.
    (jobs / "empty-0.json").write_text('{"job_id": "empty-0", "job_st')
    wait_for(
        lambda: bool(listing(store)) and opens_of(opened, "empty-0.json") >= 3,
        EVENT_LATENCY,
    )
    for _ in range(3):
        reconcile(store)
        assert listing(store) == {"good": "done"}
    assert len([r for r in caplog.records if "empty-0 " in r.getMessage()]) == 2
    write_job_file(jobs, "empty-0", "fixed")
    wait_for(
        lambda: listing(store) == {"good": "done", "empty-0": "fixed"}, EVENT_LATENCY
    )


def test_a_file_that_turns_unparseable_is_left_out_and_a_500(
    make_store: Callable[..., FileStore], tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job_file(jobs, "flip", "running")
    write_job_file(jobs, "steady", "done")
    store = make_store()
    assert listing(store) == {"flip": "running", "steady": "done"}
    # Rewritten in place, and caught half-way: not a record now.
    (jobs / "flip.json").write_text('{"job_id": "flip", "job_st')
    wait_for(lambda: listing(store) == {"steady": "done"}, EVENT_LATENCY)
    with pytest.raises(
        StoreError, match=r"^the file of job flip is not a JSON object$"
    ):
        store.get("flip")
    write_job_file(jobs, "flip", "done")
    wait_for(
        lambda: listing(store) == {"flip": "done", "steady": "done"}, EVENT_LATENCY
    )
    assert store.get("flip") == {"job_id": "flip", "job_status": "done"}


# -- file size ----------------------------------------------------------------


def make_sparse(path: Path, size: int) -> None:
    with path.open("wb") as file:
        file.truncate(size)


def test_a_file_over_the_limit_is_skipped_unread(
    make_store: Callable[..., FileStore],
    tmp_path: Path,
    opened: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    make_sparse(jobs / "huge.json", 64 << 20)
    write_job_file(jobs, "good", "done")
    caplog.set_level(logging.WARNING, "jobstatus.filesystem")
    opened.clear()  # the files' writing opened them
    store = make_store()
    for _ in range(3):
        assert listing(store) == {"good": "done"}
        reconcile(store)
    assert opens_of(opened, "huge.json") == 0  # its size, from the listing, sufficed
    lines = [r.getMessage() for r in caplog.records if "huge" in r.getMessage()]
    assert lines == [
        f"skipping job file: the file of job huge is larger than {4 << 20} bytes"
    ]
    with pytest.raises(
        StoreError, match=f"^the file of job huge is larger than {4 << 20} bytes$"
    ):
        store.get("huge")


def test_the_limit_is_a_store_url_option(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job_file(jobs, "big", "done", log="x" * 5_000)
    write_job_file(jobs, "small", "done")
    for url, expected in (
        (f"file://{tmp_path}?max_file_size=1000", {"small": "done"}),
        (f"file://{tmp_path}?max_file_size=10000", {"big": "done", "small": "done"}),
        (f"file://{tmp_path}?index=off&max_file_size=1000", {"small": "done"}),
    ):
        store = FileStore.from_url(url)
        try:
            assert listing(store) == expected
        finally:
            store.close()
    for bad in ("0", "-1", "1.5", "4MiB"):
        with pytest.raises(ConfigError, match="max_file_size"):
            FileStore.from_url(f"file://{tmp_path}?max_file_size={bad}")


def test_a_short_read_is_read_on_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux reads at most 0x7ffff000 bytes per call: a file over 2 GiB reads
    # short though nothing is wrong. The same, scaled down: 4 KiB per call.
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job_file(jobs, "long", "done", log="x" * 200_000)
    real_read = os.read

    def capped(fd: int, size: int) -> bytes:
        return real_read(fd, min(size, 4096))

    monkeypatch.setattr(jobfiles.os, "read", capped)
    store = FileStore(tmp_path, index=False)
    try:
        found = store.get("long")
        assert found is not None and len(found["log"]) == 200_000
        assert listing(store) == {"long": "done"}
    finally:
        store.close()


def test_a_file_that_grows_past_the_limit_while_read_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job_file(jobs, "growing", "done", log="x" * 10_000)
    real_fstat = os.fstat

    def fstat_seen_early(fd: int) -> os.stat_result:
        # Fault: the size as it was before the writer's last 9,990 bytes.
        return stat_with_size(real_fstat(fd), 100)

    monkeypatch.setattr(jobfiles.os, "fstat", fstat_seen_early)
    store = FileStore(tmp_path, index=False, max_file_size=1000)
    try:
        with pytest.raises(StoreError, match="larger than 1000 bytes"):
            store.get("growing")
    finally:
        store.close()


# -- non-finite numbers -------------------------------------------------------


def test_non_finite_numbers_list_and_get_as_the_core_encodes_them(
    make_store: Callable[..., FileStore], tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    texts = {
        "nan": '{"job_id": "nan", "job_status": NaN, "response": {"p": [NaN]}}',
        "inf": '{"job_id": "inf", "job_status": Infinity}',
        "huge": '{"job_id": "huge", "job_status": -1e999, "response": 1e999}',
    }
    for job_id, text in texts.items():
        (jobs / f"{job_id}.json").write_text(text)
    store = make_store()
    held = {job_id: json.loads(text) for job_id, text in texts.items()}

    def strict(text: str) -> Any:
        def refuse(token: str) -> None:
            raise AssertionError(f"{token} in an answer")

        return json.loads(text, parse_constant=refuse)

    # The answer's text, in the store's order.
    listed = strict(jsontext.join_members(store.window(0).members))
    assert listed == strict(
        jsontext.encode(
            {job_id: record["job_status"] for job_id, record in held.items()}
        )
    )
    assert listed == {"nan": None, "inf": None, "huge": None}
    for job_id, record in held.items():
        got = jsontext.encode(store.get(job_id))
        assert got == jsontext.encode(record)
        strict(got)


# -- retention ------------------------------------------------------------------


@pytest.fixture
def audited() -> Iterator[list[tuple[str, str]]]:
    """Files opened and directories listed from here on (see ``opened``)."""
    events: list[tuple[str, str]] = []
    recording = [True]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if recording[0] and event in ("open", "os.scandir", "os.listdir"):
            events.append((event, str(args[0])))

    sys.addaudithook(audit)
    yield events
    recording[0] = False


@pytest.mark.parametrize("index", [True, False])
def test_stale_comes_from_the_index_without_a_scan(
    tmp_path: Path, audited: list[tuple[str, str]], index: bool
) -> None:
    (tmp_path / "jobs").mkdir()
    store = FileStore.open(tmp_path, index=index, expire="delete")
    assert isinstance(store, ExpiringFileStore)
    try:
        for i in range(20):
            store.put({"job_id": f"j{i}", "job_status": "done"}, at=float(i))
        audited.clear()
        rows = store.stale(Stale(before=10.0, limit=5))
        assert [row.job_id for row in rows] == ["j0", "j1", "j2", "j3", "j4"]
        listed = [path for event, path in audited if event != "open"]
        # The scanning store lists the directory (a scan per batch, which a
        # purge in the background can afford); the index does not (it reads
        # only files its events named).
        assert bool(listed) is not index, listed
    finally:
        store.close()


def test_another_instance_learns_an_expiry_through_its_observer(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobs").mkdir()
    purger = FileStore.open(tmp_path, expire="delete")
    other = FileStore.open(tmp_path, expire="delete", reconcile_interval=NEVER)
    assert isinstance(purger, ExpiringFileStore)
    assert isinstance(other, ExpiringFileStore)
    try:
        purger.put({"job_id": "a", "job_status": "done"}, at=1.0)
        wait_for(lambda: listing(other) == {"a": "done"}, EVENT_LATENCY)
        (tomb,) = purger.expire(purger.stale(Stale(before=5.0)), at=9.0)
        # Its index drops the job when the observer sees the file go ...
        wait_for(lambda: listing(other) == {}, EVENT_LATENCY)
        assert other.page(Query(limit=10)) == []
        # ... and its change order takes in the tombstone's place.
        assert other.mark().head >= tomb.position
        assert other.buried(Query(limit=10)) == [tomb]
        assert other.tombstones(["a"]) == {"a": tomb}
    finally:
        purger.close()
        other.close()


# -- rows as columns -------------------------------------------------------------


def test_rows_answer_the_same_after_their_dead_slots_are_compacted() -> None:
    # Each change of a job leaves its old slot dead; once dead slots
    # outnumber live ones by 1,024 they are compacted away.
    changed, fresh = JobColumns(), JobColumns()
    final: dict[str, tuple[jobfiles.Fingerprint, float, str, str | None, int]] = {}
    for i in range(3000):
        # 50 jobs written once, before every compaction; 3 changed since.
        job_id = f"job-{i}" if i < 50 else f"job-{i % 3}"
        fingerprint = jobfiles.Fingerprint(i + 1, 10, i, 1000 + i)
        version = make_version(i + 1, 1000 + i, i.to_bytes(8, "big"))
        status = None if i % 7 == 0 else jsontext.encode(["done", "failed"][i % 2])
        position = changed.next_position(1000 + i)
        changed.set(job_id, fingerprint, 5000.0 - i, version, status, position)
        final[job_id] = (fingerprint, 5000.0 - i, version, status, position)
    assert len(changed._ids) < 3000  # compacted at least once
    for job_id, (fingerprint, mtime, version, status, position) in sorted(
        final.items(), key=lambda item: item[1][4]
    ):
        fresh.set(job_id, fingerprint, mtime, version, status, position)
    for query in (Query(), Query(statuses=frozenset({'"done"'})), Query(after=3500)):
        assert changed.page(query) == fresh.page(query)
    assert changed.window(0) == fresh.window(0)
    assert changed.counts(None, None) == fresh.counts(None, None)
    assert changed.counts(None, 2002.0) == fresh.counts(None, 2002.0)
    assert [changed.get(j) for j in final] == [fresh.get(j) for j in final]


@pytest.fixture
def slow_reads(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """A disk that takes ``seconds`` a file (a fault: a cold disk, a million
    files)."""

    def slow(seconds: float) -> None:
        read = jobfiles.ListingReads.read

        def slowly(self: Any, job_id: str, seen: Any = None) -> Any:
            time.sleep(seconds)
            return read(self, job_id, seen)

        monkeypatch.setattr(jobfiles.ListingReads, "read", slowly)

    return slow


def test_a_store_for_a_server_answers_unavailable_until_its_index_is_built(
    tmp_path: Path,
    slow_reads: Callable[[float], None],
    serve: Callable[[Any], str],
) -> None:
    """``jobstatus serve`` listens at once: a liveness probe sees it alive
    (``/healthz``), a load balancer not ready (``/readyz``), and requests are
    ``503 Job store unavailable`` — never a scan of every file per request."""
    import httpx

    from jobstatus_adapters.starlette import create_app

    from .helpers import API_KEY, service_for

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for n in range(300):
        write_job_file(jobs, f"j{n}", "done")
    slow_reads(0.01)  # about 3 s in all
    started = time.monotonic()
    store = FileStore.open(tmp_path, background=True)
    try:
        assert time.monotonic() - started < 1.0
        url = serve(create_app(service_for(store)))
        assert httpx.get(url + "/healthz").status_code == 200
        assert httpx.get(url + "/readyz").status_code == 503
        listing = httpx.post(
            url + "/v1/toolkit/jobs/status",
            json={"since_seconds": 600},
            headers={"x-api-key": API_KEY},
        )
        assert listing.status_code == 503
        assert listing.json()["message"] == "Job store unavailable"
        with pytest.raises(StoreError, match="still being built"):
            store.changed_since(0)
        # A write is refused before it is made, not said to fail once made.
        with pytest.raises(StoreError, match="still being built"):
            store.put({"job_id": "during", "job_status": "queued"})
        assert not (jobs / "during.json").exists()
        wait_for(lambda: httpx.get(url + "/readyz").status_code == 200, 30)
        assert len(listing_of(store)) == 300
    finally:
        store.close()


def listing_of(store: FileStore) -> dict[str, Any]:
    return dict(store.changed_since(0))


def test_closed_while_its_index_builds_it_stops_and_writes_no_snapshot(
    tmp_path: Path, slow_reads: Callable[[float], None]
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for n in range(3000):
        write_job_file(jobs, f"j{n}", "done")
    slow_reads(0.002)  # about 6 s in all; it looks every 1,024 files
    store = FileStore.open(tmp_path, background=True)
    time.sleep(0.2)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 5.0
    assert not (tmp_path / ".jobstatus" / "index.snapshot").exists()
