"""Retention (SPEC §14): the policy, purge, and what every endpoint answers
about an expired job, on every store that expires jobs."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from jobstatus_adapters import cli
from jobstatus_adapters.purging import Purger
from jobstatus_adapters.starlette import create_app
from jobstatus_backends import store_from_url
from jobstatus_backends.memory import MemoryStore
from jobstatus_backends.migrate import copy_jobs
from jobstatus_core import ConfigError, Expiring, Settings, Store, StoreUnavailable
from jobstatus_core.retention import OFF, Policy, parse_policy, purge

from .helpers import (
    API_KEY,
    Clock,
    ServeProcess,
    clean_env,
    expiring,
    service_for,
    wait_for,
)
from .test_feed import stream
from .test_http_contract import assert_error, envelope_of

DAY = 86400.0
NOW = Clock().now
WEEK = parse_policy("done=7d,failed=30d,*=off")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = store_from_url(expiring(store_url))
    yield opened
    opened.close()


def next_event(events: queue.Queue[dict[str, str] | None]) -> dict[str, str] | None:
    """The next event with a name (a lone ``retry:`` is not one); None: ended."""
    while True:
        event = events.get(timeout=5)
        if event is None or "event" in event:
            return event


def put(store: Store, job_id: str, status: str, at: float) -> None:
    store.put({"job_id": job_id, "job_status": status, "response": None}, at=at)


def aged(store: Store) -> None:
    """Jobs either side of a 7-day (done) and 30-day (failed) policy."""
    put(store, "old-done", "done", NOW - 8 * DAY)
    put(store, "new-done", "done", NOW - 6 * DAY)
    put(store, "old-failed", "failed", NOW - 31 * DAY)
    put(store, "mid-failed", "failed", NOW - 8 * DAY)
    put(store, "old-running", "running", NOW - 100 * DAY)


# -- the policy --------------------------------------------------------------


def test_the_policy_parses_and_says_itself() -> None:
    policy = parse_policy(" done=7d, cancelled=12h ,failed=30m,x=45s,*=off ")
    assert policy.ages == {
        "done": 7 * DAY,
        "cancelled": 12 * 3600.0,
        "failed": 1800.0,
        "x": 45.0,
    }
    assert policy.other is None and policy.active
    assert policy.describe() == "done=7d,cancelled=12h,failed=30m,x=45s,*=off"
    assert parse_policy("*=2d").other == 2 * DAY
    assert parse_policy("") == OFF and not OFF.active and OFF.describe() == "off"
    assert not parse_policy("done=off,*=off").active


def test_settings_default_and_read_both_settings() -> None:
    default = Settings.from_environ({}, cwd="/srv")
    assert default.retention == OFF and default.tombstones == 30 * DAY
    given = Settings.from_environ(
        {"JOBSTATUS_RETENTION": "done=1d", "JOBSTATUS_TOMBSTONES": "2h"}, cwd="/srv"
    )
    assert given.retention == Policy({"done": DAY}) and given.tombstones == 7200.0


AGE = "(a whole number > 0 and s, m, h or d, or off)"


@pytest.mark.parametrize(
    ("setting", "raw", "message"),
    [
        (
            "JOBSTATUS_RETENTION",
            "done",
            "JOBSTATUS_RETENTION: expected status=age like done=7d, got 'done'",
        ),
        (
            "JOBSTATUS_RETENTION",
            "=7d",
            "JOBSTATUS_RETENTION: expected status=age like done=7d, got '=7d'",
        ),
        (
            "JOBSTATUS_RETENTION",
            "done=7",
            f"JOBSTATUS_RETENTION: expected an age like 7d for done {AGE}, got '7'",
        ),
        (
            "JOBSTATUS_RETENTION",
            "done=7w",
            f"JOBSTATUS_RETENTION: expected an age like 7d for done {AGE}, got '7w'",
        ),
        (
            "JOBSTATUS_RETENTION",
            "done=0d",
            f"JOBSTATUS_RETENTION: expected an age like 7d for done {AGE}, got '0d'",
        ),
        (
            "JOBSTATUS_RETENTION",
            "done=-1d",
            f"JOBSTATUS_RETENTION: expected an age like 7d for done {AGE}, got '-1d'",
        ),
        (
            "JOBSTATUS_RETENTION",
            "done=1.5d",
            f"JOBSTATUS_RETENTION: expected an age like 7d for done {AGE}, got '1.5d'",
        ),
        (
            "JOBSTATUS_RETENTION",
            "*=",
            f"JOBSTATUS_RETENTION: expected an age like 7d for * {AGE}, got ''",
        ),
        (
            "JOBSTATUS_RETENTION",
            "done=1d,done=2d",
            "JOBSTATUS_RETENTION: done is given twice",
        ),
        ("JOBSTATUS_RETENTION", "*=off,*=1d", "JOBSTATUS_RETENTION: * is given twice"),
        (
            "JOBSTATUS_TOMBSTONES",
            "off",
            "JOBSTATUS_TOMBSTONES: expected an age like 7d (a whole number > 0 and"
            " s, m, h or d), got 'off'",
        ),
        (
            "JOBSTATUS_TOMBSTONES",
            "30",
            "JOBSTATUS_TOMBSTONES: expected an age like 7d (a whole number > 0 and"
            " s, m, h or d), got '30'",
        ),
    ],
)
def test_every_bad_setting_is_one_line(setting: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({setting: raw}, cwd="/srv")
    assert str(caught.value) == message


# -- purge ---------------------------------------------------------------------


def test_purge_expires_by_status_and_age(store: Store) -> None:
    aged(store)
    purged = purge(store, WEEK, now=NOW, batch=1)  # one job a batch: it loops
    assert purged.expired == {"done": 1, "failed": 1} and purged.forgotten == 0
    assert purged.summary() == "expired 2 (done 1, failed 1), forgot 0 tombstones"
    assert store.get("old-done") is None and store.get("old-failed") is None
    alive = {"new-done", "mid-failed", "old-running"}
    assert set(store.read_many(sorted(alive))) == alive
    assert isinstance(store, Expiring)
    tombs = store.tombstones(["old-done", "old-failed", "new-done"])
    assert {t.job_id: t.record() for t in tombs.values()} == {
        "old-done": {"job_id": "old-done", "job_status": "done", "expired_at": NOW},
        "old-failed": {
            "job_id": "old-failed",
            "job_status": "failed",
            "expired_at": NOW,
        },
    }
    # A week later, "new-done" is old too; "*" picks up any other status.
    later = purge(store, parse_policy("done=7d,*=50d"), now=NOW + 2 * DAY)
    assert later.expired == {"done": 1, "running": 1}
    assert store.get("mid-failed") is not None  # under "*", but 10 days old


def test_purge_forgets_old_tombstones(store: Store) -> None:
    aged(store)
    purge(store, WEEK, now=NOW, tombstones=DAY)
    assert isinstance(store, Expiring)
    assert purge(store, WEEK, now=NOW + DAY - 1, tombstones=DAY).forgotten == 0
    dry = purge(store, WEEK, now=NOW + DAY + 1, tombstones=DAY, dry_run=True)
    assert dry.forgotten == 2 and len(store.tombstones(["old-done", "old-failed"])) == 2
    assert purge(store, WEEK, now=NOW + DAY + 1, tombstones=DAY).forgotten == 2
    assert store.tombstones(["old-done", "old-failed"]) == {}


def test_a_dry_run_counts_and_removes_nothing(store: Store) -> None:
    aged(store)
    before = list(store.read_many(["old-done", "old-failed"]))
    dry = purge(store, parse_policy("done=7d,failed=30d,*=1d"), now=NOW, dry_run=True)
    assert dry.expired == {"done": 1, "failed": 1, "running": 1}
    assert list(store.read_many(["old-done", "old-failed"])) == before
    assert isinstance(store, Expiring)
    assert store.tombstones(["old-done", "old-failed", "old-running"]) == {}
    real = purge(store, parse_policy("done=7d,failed=30d,*=1d"), now=NOW)
    assert real.expired == dry.expired


def test_a_store_that_does_not_expire_is_refused(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    plain = store_from_url(f"file://{tmp_path}")
    try:
        assert not isinstance(plain, Expiring)
        with pytest.raises(ConfigError, match=r"\?expire=delete"):
            purge(plain, WEEK, now=NOW)
        with pytest.raises(ConfigError, match="the store does not expire jobs"):
            Purger(plain, WEEK)
    finally:
        plain.close()


# -- what the endpoints answer -------------------------------------------------


@pytest.fixture
def client_at(
    store: Store, serve_service: Callable[..., str]
) -> Iterator[httpx.Client]:
    url = serve_service(service_for(store, Clock(NOW)))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        yield http


def test_v1_answers_410_with_the_tombstone(
    client_at: httpx.Client, store: Store
) -> None:
    aged(store)
    purge(store, WEEK, now=NOW)
    body = assert_error(client_at.get("/v1/job/old-done"), 410, "Job expired")
    assert body["response"] == {
        "job_id": "old-done",
        "job_status": "done",
        "expired_at": NOW,
    }
    assert_error(client_at.get("/v1/job/never"), 404, "Job not found")
    waited = client_at.get("/v1/job/old-done", params={"wait": 30})
    assert assert_error(waited, 410, "Job expired")["response"]["job_id"] == "old-done"
    batch = envelope_of(
        client_at.post(
            "/v1/jobs/batch", json={"job_ids": ["old-done", "new-done", "never"]}
        )
    )["response"]
    assert set(batch["jobs"]) == {"new-done"} and batch["unknown"] == ["never"]
    assert batch["expired"] == {"old-done": body["response"]}
    wait = envelope_of(
        client_at.post(
            "/v1/jobs/wait",
            json={"job_ids": ["old-done", "old-running"], "timeout": 30},
        )
    )["response"]
    assert wait["expired"] == {"old-done": body["response"]}
    assert wait["pending"] == ["old-running"] and wait["timed_out"] is False


def test_toolkit_lists_and_counts_never_show_it(
    client_at: httpx.Client, store: Store
) -> None:
    aged(store)
    purge(store, WEEK, now=NOW)
    toolkit = client_at.post("/v1/toolkit/job/status", json={"job_id": "old-done"})
    assert_error(toolkit, 404, "Job not found")
    listing = envelope_of(
        client_at.post("/v1/toolkit/jobs/status", json={"since_seconds": 365 * DAY})
    )
    assert listing["response"] == {
        "new-done": "done",
        "mid-failed": "failed",
        "old-running": "running",
    }
    page = envelope_of(
        client_at.get("/v1/jobs", params={"counts": "true", "limit": 10})
    )["response"]
    assert {item["job_id"] for item in page["jobs"]} == set(listing["response"])
    assert page["counts"] == {"done": 1, "failed": 1, "running": 1}


def test_a_job_written_again_is_alive_again(
    client_at: httpx.Client, store: Store
) -> None:
    aged(store)
    purge(store, WEEK, now=NOW)
    put(store, "old-done", "queued", NOW)
    body = envelope_of(client_at.get("/v1/job/old-done"))
    assert body["code"] == 200 and body["response"]["job_status"] == "queued"
    batch = envelope_of(
        client_at.post("/v1/jobs/batch", json={"job_ids": ["old-done"]})
    )["response"]
    assert batch["expired"] == {} and set(batch["jobs"]) == {"old-done"}


def test_the_feed_sends_expired_in_change_order(
    store: Store, serve: Callable[[ASGIApp], str]
) -> None:
    url = serve(create_app(service_for(store, Clock(NOW))))
    put(store, "a", "done", NOW - 8 * DAY)
    put(store, "b", "running", NOW - 1)
    with stream(url, "/v1/jobs/events") as events:
        first = next_event(events)
        assert first is not None and json.loads(first["data"])["job_id"] == "b"
        purge(store, WEEK, now=NOW)
        put(store, "c", "queued", NOW)
        expired, job = next_event(events), next_event(events)
    assert expired is not None and job is not None
    assert expired["event"] == "expired"
    assert json.loads(expired["data"]) == {
        "job_id": "a",
        "job_status": "done",
        "expired_at": NOW,
    }
    assert job["event"] == "job" and json.loads(job["data"])["job_id"] == "c"
    # Resuming from the start sends the expiry at its place, then the write.
    headers = {"x-api-key": API_KEY, "last-event-id": first["id"]}
    with stream(url, "/v1/jobs/events", headers=headers) as events:
        resumed = [next_event(events), next_event(events)]
    assert [e["event"] for e in resumed if e is not None] == ["expired", "job"]
    # A job's own stream ends after its expiry.
    with stream(url, "/v1/job/a/events") as events:
        only = next_event(events)
        assert only is not None and only["event"] == "expired"
        assert next_event(events) is None


# -- the command line, serve and migrate ---------------------------------------


def test_jobstatus_purge_prints_what_it_removes(
    store_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if store_url.startswith("memory:"):
        pytest.skip("each memory:// store is a new one: the CLI cannot see this one")
    if store_url.startswith("dbm:"):
        pytest.skip("dbm.dumb is opened by one store at a time")
    now = cli.time.time()
    put(store, "old", "done", now - 8 * DAY)
    put(store, "new", "done", now)
    monkeypatch.setenv("JOBSTATUS_RETENTION", "done=7d")
    url = expiring(store_url)
    assert cli.main(["purge", "--dry-run", "--store", url]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "would expire 1 job",
        "would forget 0 tombstones",
    ]
    assert store.get("old") is not None
    assert cli.main(["purge", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "done" in out and out.splitlines()[-2:] == [
        "expired 1 job",
        "forgot 0 tombstones",
    ]
    assert store.get("old") is None and store.get("new") is not None
    # `get` says what GET /v1/job/{id} answers with 410, not "not found".
    assert cli.main(["get", "old", "--store", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jobstatus: job 'old' expired: it was done, removed at ")
    assert cli.main(["get", "gone", "--store", url]) == 1
    assert capsys.readouterr().err == "jobstatus: job 'gone' not found\n"


def test_serve_and_purge_refuse_a_store_that_does_not_expire(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "jobs").mkdir()
    monkeypatch.setenv("JOBSTATUS_RETENTION", "done=7d")
    for command in ("serve", "purge"):
        assert cli.main([command, "--store", f"file://{tmp_path}"]) == 2
        err = capsys.readouterr().err
        assert err == (
            "jobstatus: error: JOBSTATUS_RETENTION: the store does not expire jobs"
            " (the file store does with ?expire=delete in its URL)\n"
        )


def test_serve_says_its_policy_and_purges(tmp_path: Path) -> None:
    env = clean_env(API_KEY="k", JOBSTATUS_RETENTION="done=7d,*=off")
    running = ServeProcess(tmp_path, env, "--store", "memory://")
    _, err = running.stop()
    assert ", 1 worker, retention done=7d,*=off)" in err
    (tmp_path / "jobs").mkdir()
    files = ServeProcess(tmp_path, env, "--store", f"file://{tmp_path}?expire=delete")
    _, err = files.stop()
    jobs = tmp_path / "jobs"
    assert f"retention done=7d,*=off, deleting expired job files in {jobs})" in err


def test_the_purger_runs_in_its_thread_and_logs_failures(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    put(store, "old", "done", NOW - 8 * DAY)
    with Purger(store, WEEK, every=3600, clock=lambda: NOW) as purger:
        wait_for(lambda: purger.turns > 0)
    assert purger.last is not None and purger.last.expired == {"done": 1}
    store.put({"job_id": "x", "job_status": "done"}, at=NOW - 8 * DAY)
    broken = Purger(store, WEEK, clock=lambda: NOW)

    def down(query: object) -> list[object]:
        raise ConnectionError("store down")

    monkeypatch.setattr(store, "stale", down)  # a fault, injected
    with caplog.at_level(logging.WARNING, "jobstatus.retention"):
        assert broken.purge_once() is None
    assert "retention: purge failed, trying again in 60s: " in caplog.text
    assert "ConnectionError" in caplog.text
    assert store.get("x") is not None
    # A store that is unavailable (down, or its file index still being
    # built) is said at info, not as a failure of the purge.
    caplog.clear()

    def building(query: object) -> list[object]:
        raise StoreUnavailable("the job index is still being built")

    monkeypatch.setattr(store, "stale", building)
    with caplog.at_level(logging.INFO, "jobstatus.retention"):
        assert broken.purge_once() is None
    (said,) = caplog.records
    assert said.levelno == logging.INFO and said.getMessage() == (
        "retention: the store is unavailable, purging in 60s:"
        " the job index is still being built"
    )


def test_migrate_carries_tombstones(store: Store, tmp_path: Path) -> None:
    aged(store)
    purge(store, WEEK, now=NOW)
    target = MemoryStore()
    report = copy_jobs(store, target)
    assert report.copied == 3 and report.tombstones == 2
    assert isinstance(store, Expiring)
    ids = ["old-done", "old-failed"]
    carried = {t.job_id: t.record() for t in target.tombstones(ids).values()}
    assert carried == {t.job_id: t.record() for t in store.tombstones(ids).values()}
    assert target.get("old-done") is None
    again = copy_jobs(store, target)
    assert again.tombstones == 0
    # Into a store that expires no jobs: not carried, and said so.
    (tmp_path / "toolkit" / "jobs").mkdir(parents=True)
    toolkit = store_from_url(f"file://{tmp_path}/toolkit")
    left = copy_jobs(store, toolkit)
    assert left.copied == 3 and left.tombstones_left == 2
    assert left.summary().endswith(
        ", 2 tombstones not carried (the destination expires no jobs:"
        " a file store does with ?expire=delete)"
    )
    toolkit.close()


def test_a_stopping_server_ends_a_purge_after_its_batch() -> None:
    batches: list[int] = []
    stopping = threading.Event()

    class Stopped(MemoryStore):
        def expire(self, rows: Any, *, at: float) -> Any:
            batches.append(len(rows))
            stopping.set()  # the server stops while this batch runs
            return super().expire(rows, at=at)

    store = Stopped()
    for i in range(3000):
        put(store, f"old-{i}", "done", NOW - 8 * DAY)
    purger = Purger(store, WEEK, every=3600, clock=lambda: NOW)
    purger._stopping = stopping
    with purger:
        wait_for(lambda: purger.turns > 0)
    assert batches == [1000]
    assert purger.last is None
    assert len(store.tombstones([f"old-{i}" for i in range(3000)])) == 1000
