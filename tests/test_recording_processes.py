"""Several writers record random, partly out-of-order changes into one store
while a reader pages through ``GET /v1/jobs`` with cursors (SPEC §9, §13).

Writers are processes where the store can be shared between processes, and
threads for the stores that live in one process (memory, the dbm plug-in).
Afterwards: the reader's view, applied in order, equals the store; no
applied change lost a field; every record is what the rules allow.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobstatus_backends import store_from_url
from jobstatus_backends.recorder import Recorder
from jobstatus_core import Store, StoreError
from jobstatus_core.errors import OPENED_BEFORE_FORK

from .helpers import IN_PROCESS_STORES

JOBS = [f"job-{i}" for i in range(6)]
WRITERS = 3
CHANGES = 40
TERMINAL = {"done", "failed", "cancelled"}

Applied = list[tuple[str, str, int | None, str | None, bool]]


def write(url: str, seed: int, store: Store | None = None) -> Applied:
    """Random changes; returns (job, kind, attempt, meta key, applied) of each."""
    rng = random.Random(seed)
    recorder = Recorder(store if store is not None else url)
    applied: Applied = []
    for i in range(CHANGES):
        job_id = rng.choice(JOBS)
        kind = rng.choice(
            [
                "queued",
                "running",
                "progress",
                "done",
                "failed",
                "cancelled",
                "meta",
                "meta",
            ]
        )
        attempt = rng.choice([None, None, None, 1, 2, 3])
        key = None
        if kind == "meta":
            key = f"w{seed}-{i}"
            ok = recorder.meta(job_id, **{key: i})
        elif kind == "progress":
            ok = recorder.progress(job_id, i, CHANGES, attempt=attempt)
        elif kind == "done":
            ok = recorder.done(job_id, {"by": seed, "i": i}, attempt=attempt)
        elif kind == "failed":
            ok = recorder.failed(job_id, RuntimeError(f"{seed}-{i}"), attempt=attempt)
        else:
            ok = getattr(recorder, kind)(job_id, attempt=attempt)
        applied.append((job_id, kind, attempt, key, ok))
    if store is None:
        recorder.close()
    return applied


def _write(args: tuple[str, int]) -> Applied:
    return write(*args)


def settled(client: httpx.Client, versions: dict[str, str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        body = client.get("/v1/jobs", params={"limit": "100"}).json()
        listed = {job["job_id"]: job["version"] for job in body["response"]["jobs"]}
        if listed == versions or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def test_writers_and_a_paging_reader_agree(
    store: Store, store_url: str, client: httpx.Client, request: Any
) -> None:
    kind = request.node.callspec.params["store_url"]
    seen: dict[str, str] = {}  # job -> version, applying pages in order
    cursor: list[str] = [""]
    stop = threading.Event()
    errors: list[str] = []

    def read_pages() -> None:
        while True:
            stopping = stop.is_set()
            params = {"limit": "3", **({"cursor": cursor[0]} if cursor[0] else {})}
            body = client.get("/v1/jobs", params=params).json()
            if body["code"] != 200:
                errors.append(body["message"])
                return
            for job in body["response"]["jobs"]:
                seen[job["job_id"]] = job["version"]
            cursor[0] = body["response"]["cursor"]
            if stopping and not body["response"]["has_more"]:
                return

    reader = threading.Thread(target=read_pages)
    reader.start()
    if kind in IN_PROCESS_STORES:
        results: list[Applied] = []
        threads = [
            threading.Thread(
                target=lambda s=s: results.append(write(store_url, s, store))
            )
            for s in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
            results = pool.map(_write, [(store_url, s) for s in range(WRITERS)])
    rows = store.read_many(JOBS)
    # The file index learns other processes' writes from inotify, within the
    # observer's latency (docs/stores.md): the last page is asked for once
    # the listing shows the writes.
    settled(client, {job_id: row.version for job_id, row in rows.items()})
    stop.set()
    reader.join(60)
    assert not errors, errors

    # The reader's view, applied in change order, is the store's state.
    assert seen == {job_id: row.version for job_id, row in rows.items()}
    for job_id, row in rows.items():
        record = row.record
        assert record is not None
        mine = [r for result in results for r in result if r[0] == job_id and r[4]]
        attempts = [
            a for _, kind_, a, _, _ in mine if a is not None and kind_ != "meta"
        ]
        assert record["attempt"] >= max(attempts, default=1)
        # No applied meta patch is lost, whatever raced with it.
        for _, kind_, _, key, _ in mine:
            if kind_ == "meta":
                assert key in record["meta"], (job_id, key)
        status = record["job_status"]
        assert status in {"queued", "running", *TERMINAL}
        if status in TERMINAL:
            assert "finished_at" in record
        if status == "done":
            assert set(record["response"]) == {"by", "i"}
        if status == "failed":
            assert record["error"]["type"] == "RuntimeError"


ROUNDS = 150


def annotate(url: str, writer: int) -> list[str]:
    """Meta patches on jobs the other writer changes too: each of this
    recorder's kept records goes stale again and again."""
    recorder = Recorder(url)
    keys = []
    for i in range(ROUNDS):
        key = f"w{writer}-{i}"
        recorder.queued(JOBS[i % 2])  # applies once, then is ignored
        assert recorder.meta(JOBS[i % 2], **{key: i})
        keys.append(key)
    recorder.close()
    return keys


def _annotate(args: tuple[str, int]) -> list[str]:
    return annotate(*args)


@pytest.mark.parametrize(
    "store_url",
    [
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
    indirect=True,
)
def test_two_recorders_with_kept_versions_lose_no_change(store_url: str) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        keys = pool.map(_annotate, [(store_url, 0), (store_url, 1)])
    store = store_from_url(store_url)
    try:
        rows = store.read_many(JOBS[:2])
    finally:
        store.close()
    meta = {
        key: value
        for row in rows.values()
        for key, value in (row.record or {})["meta"].items()
    }
    assert sorted(meta) == sorted(keys[0] + keys[1])


def _record_in_a_child(recorder: Recorder, answers: Any) -> None:
    try:
        answers.put(("recorded", recorder.queued("child-job")))
    except StoreError as error:
        answers.put(("refused", str(error)))


@pytest.mark.sqlite
def test_a_recorder_forked_after_its_store_opened(tmp_path: Path) -> None:
    """gunicorn --preload, a multiprocessing pool: a child does not write
    through its parent's SQLite connection. A recorder that opened the store
    from its URL opens it again; one handed the store refuses, saying why."""
    url = f"sqlite://{tmp_path / 'jobs.db'}"
    fork = multiprocessing.get_context("fork")
    handed, owned = Recorder(store_from_url(url)), Recorder(url)
    handed.queued("parent-job")  # both opened and used before the fork
    owned.queued("parent-job-2")
    answers = fork.Queue()
    for recorder in (handed, owned):
        child = fork.Process(target=_record_in_a_child, args=(recorder, answers))
        child.start()
        child.join(30)
        assert child.exitcode == 0
    assert answers.get(timeout=5) == ("refused", OPENED_BEFORE_FORK)
    assert answers.get(timeout=5) == ("recorded", True)
    assert owned.store.read("child-job") is not None
    # The parent's own recorders are untouched.
    assert handed.running("parent-job") and owned.running("parent-job-2")
    handed.store.close()
    owned.close()
