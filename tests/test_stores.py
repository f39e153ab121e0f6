"""Store semantics, the same for every store (SPEC §5)."""

from __future__ import annotations

import threading

import pytest

from jobstatus_core import InvalidRecord, Store


def record(job_id: str, status: str = "done", **extra: object) -> dict[str, object]:
    return {"job_id": job_id, "job_status": status, **extra}


def test_get_unknown_job_is_none(store: Store) -> None:
    assert store.get("nope") is None


def test_record_is_returned_verbatim(store: Store) -> None:
    stored = record(
        "job-1",
        "done",
        queue_id=140234,
        process_id=77,
        response={
            "code": 200,
            "response": [{"file_url": "https://x/y.mp4"}],
            "ok": True,
            "n": None,
        },
        note="naïve ☃ 日本",
        ratio=0.1,
    )
    store.put(stored, at=100.0)
    assert store.get("job-1") == stored


def test_get_returns_a_copy(store: Store) -> None:
    store.put(record("job-1", response={"a": [1]}), at=1.0)
    first = store.get("job-1")
    assert first is not None
    first["response"]["a"].append(2)
    assert store.get("job-1") == record("job-1", response={"a": [1]})


def test_cutoff_is_inclusive(store: Store) -> None:
    store.put(record("at-cutoff"), at=100.0)
    store.put(record("before"), at=99.999)
    store.put(record("after", "running"), at=150.0)
    assert dict(store.changed_since(100.0)) == {"at-cutoff": "done", "after": "running"}
    assert dict(store.changed_since(100.001)) == {"after": "running"}
    assert dict(store.changed_since(151.0)) == {}


def test_overwrite_moves_last_written_and_status(store: Store) -> None:
    store.put(record("job-1", "queued"), at=100.0)
    store.put(record("job-1", "done"), at=200.0)
    assert dict(store.changed_since(150.0)) == {"job-1": "done"}
    assert store.get("job-1") == record("job-1", "done")
    # Moving back in time takes it out of a window it was in.
    store.put(record("job-1", "retried"), at=50.0)
    assert dict(store.changed_since(60.0)) == {}
    assert dict(store.changed_since(50.0)) == {"job-1": "retried"}


def test_put_without_at_stamps_now(store: Store) -> None:
    import time

    before = time.time()
    store.put(record("job-1"))
    assert dict(store.changed_since(before - 0.001)) == {"job-1": "done"}
    assert dict(store.changed_since(time.time() + 60)) == {}


def test_status_may_be_any_json(store: Store) -> None:
    store.put(record("job-1", status={"stage": 2, "of": 3}), at=10.0)  # type: ignore[arg-type]
    assert dict(store.changed_since(0)) == {"job-1": {"stage": 2, "of": 3}}


@pytest.mark.parametrize(
    "bad",
    [
        {"job_status": "done"},
        {"job_id": "../x", "job_status": "done"},
        {"job_id": "", "job_status": "done"},
        {"job_id": 7, "job_status": "done"},
        {"job_id": "ok"},
    ],
)
def test_put_refuses_invalid_records(store: Store, bad: dict[str, object]) -> None:
    with pytest.raises(InvalidRecord):
        store.put(bad)
    assert dict(store.changed_since(0)) == {}


def test_put_refuses_non_json_values(store: Store) -> None:
    with pytest.raises(ValueError):
        store.put(record("job-1", ratio=float("nan")))
    assert store.get("job-1") is None


def test_exists(store: Store) -> None:
    assert store.exists() is True


def test_many_jobs(store: Store) -> None:
    for i in range(2000):
        store.put(record(f"job-{i}", "done" if i % 2 else "running"), at=float(i))
    recent = dict(store.changed_since(1500.0))
    assert len(recent) == 500
    assert recent["job-1999"] == "done" and recent["job-1500"] == "running"


def test_threads_put_and_get_at_once(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                job = f"t{n}-{i}"
                store.put(record(job, f"s{i}"), at=float(i))
                assert store.get(job) == record(job, f"s{i}")
                store.put(record(f"shared-{i % 5}", f"w{n}"), at=float(i))
                got = store.get(f"shared-{i % 5}")
                assert got is not None and got["job_status"].startswith("w")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(dict(store.changed_since(0))) == 8 * 200 + 5


def test_close_is_idempotent(store_url: str) -> None:
    from jobstatus_backends import store_from_url

    opened = store_from_url(store_url)
    opened.close()
    opened.close()
