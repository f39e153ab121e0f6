"""The Part I conformance suite: every store means the same by ``get``,
``changed_since`` and ``put`` (SPEC §5), and by the listing ``jobs/status``
sends. The v2 calls (rows, pages, counts, marks, swap) are the kit's:
``jobstatus_backends.conformance``, run by tests/test_protocol.py.

Parametrised over every store in ``helpers.STORES`` (the ``store`` fixture),
one pytest marker per store, so ``pytest -m sqlite`` runs it on SQLite alone.
"""

from __future__ import annotations

import threading

import pytest

from jobstatus_core import InvalidRecord, Store
from jobstatus_core.listing import Listings


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
    # A file's mtime comes from the kernel's coarse clock: up to a tick
    # (a few ms) before time.time() said it was.
    assert dict(store.changed_since(before - 0.01)) == {"job-1": "done"}
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


def test_10000_jobs(store: Store) -> None:
    for i in range(10_000):
        store.put(record(f"job-{i}", "done" if i % 2 else "running"), at=float(i))
    recent = dict(store.changed_since(9_000.0))
    assert len(recent) == 1_000
    assert recent["job-9999"] == "done" and recent["job-9000"] == "running"
    assert len(dict(store.changed_since(0))) == 10_000
    assert store.get("job-4321") == record("job-4321", "done")


def test_unicode_records(store: Store) -> None:
    stored = record(
        "uni",
        "готово ✓",
        text='日本語 עברית العربية 🎬🎞️ \u0000 \\ " \n',
        keys={"ключ": "値", "emoji 🎥": ["ä", "ß"]},
    )
    store.put(stored, at=1.0)
    assert store.get("uni") == stored
    assert dict(store.changed_since(0)) == {"uni": "готово ✓"}


def test_one_mebibyte_record(store: Store) -> None:
    big = record("big", response={"log": "x" * (1 << 20), "parts": list(range(1000))})
    store.put(big, at=1.0)
    assert store.get("big") == big
    big["response"]["log"] = "y" * (1 << 20)
    store.put(big, at=2.0)
    assert store.get("big") == big


def test_jobs_lists_every_job_with_its_time(store: Store) -> None:
    from jobstatus_core import Enumerable

    assert isinstance(store, Enumerable)
    store.put(record("a"), at=10.0)
    store.put(record("b"), at=20.5)
    store.put(record("a", "again"), at=30.0)
    assert sorted(store.jobs()) == [("a", 30.0), ("b", 20.5)]


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


WRITER = """
import sys
from jobstatus_backends import store_from_url
store = store_from_url(sys.argv[1])
for i in range(300):
    store.put({"job_id": f"p-{i}", "job_status": "done", "i": i}, at=1000.0 + i)
store.close()
"""


def test_a_second_process_writing_while_one_reads(
    shared_store_url: str, tmp_path: object
) -> None:
    """Every store that can be shared between processes (not memory://)."""
    import subprocess
    import sys

    from jobstatus_backends import store_from_url

    store = store_from_url(shared_store_url)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, shared_store_url])
    sizes = []
    while writer.poll() is None:
        sizes.append(len(dict(store.changed_since(1000.0))))
        assert store.get("p-0") in (
            None,
            {"job_id": "p-0", "job_status": "done", "i": 0},
        )
    assert writer.wait() == 0
    assert sizes == sorted(sizes)  # never goes back: no write is lost or torn

    def complete() -> bool:
        return len(dict(store.changed_since(1000.0))) == 300

    from .helpers import wait_for

    wait_for(complete, 5.0)  # the filesystem index: within the observer's latency
    assert store.get("p-299") == {"job_id": "p-299", "job_status": "done", "i": 299}
    store.close()


def test_window_members_are_the_encoded_listing(store: Store) -> None:
    """The listing ``jobs/status`` sends is byte for byte what encoding the
    statuses as they were put would make (SPEC §2), for any JSON status."""
    from jobstatus_core import jsontext

    statuses: list[object] = [
        "done",
        "naïve ☃ 日本 🎬",
        'quote " and \\ backslash',
        "\u2028\x00\x1f",
        {"stage": 2, "of": [3, 4.5, None, True]},
        1e16,
        1e-7,
        -0.0,
        12345678901234567890,
        None,
        [],
    ]
    store.put(record("old"), at=1.0)
    for i, status in enumerate(statuses):
        store.put(record(f"s{i}", status), at=100.0 + i)  # type: ignore[arg-type]
    put = {"old": "done", **{f"s{i}": s for i, s in enumerate(statuses)}}
    times = {"old": 1.0, **{f"s{i}": 100.0 + i for i in range(len(statuses))}}
    for cutoff in (0.0, 100.0, 105.5, 1e9):
        expected = {job: s for job, s in put.items() if times[job] >= cutoff}
        members = store.window(cutoff).members
        assert jsontext.join_members(members) == jsontext.encode(expected)


def listing(listings: Listings, cutoff: float) -> dict[str, object]:
    """The listing as ``jobs/status`` reads it: the core's kept text."""
    import json

    return dict(json.loads(listings.json(cutoff)))


def kept(store: Store) -> Listings:
    # A clock that never moves: a kept listing is only ever dropped because
    # the store's mark moved or the window passed its oldest job, never
    # because it aged out.
    return Listings(store, timer=lambda: 0.0)


def test_kept_listings_follow_the_window_and_every_write(store: Store) -> None:
    """Listings are kept between polls, but never answer a stale one."""
    listings = kept(store)
    for n, at in enumerate((100.0, 200.0, 300.0)):
        store.put(record(f"j{n}", "queued"), at=at)
    both = {"j1": "queued", "j2": "queued"}
    assert listing(listings, 150.0) == both
    assert listing(listings, 200.0) == both  # the oldest listed is still in
    assert listing(listings, 200.5) == {"j2": "queued"}  # not any more
    assert listing(listings, 50.0) == {"j0": "queued", **both}
    store.put(record("j2", "done"), at=300.0)
    assert listing(listings, 150.0) == {"j1": "queued", "j2": "done"}
    store.put(record("j0", "late"), at=400.0)
    assert listing(listings, 150.0) == {"j0": "late", "j1": "queued", "j2": "done"}


def test_a_kept_listing_shows_another_instances_write(shared_store_url: str) -> None:
    """Two instances of one store (two servers, say): no kept listing hides
    the other's write."""
    from jobstatus_backends import store_from_url

    from .helpers import wait_for

    one, two = store_from_url(shared_store_url), store_from_url(shared_store_url)
    listings = kept(one)
    for n, at in enumerate((100.0, 200.0, 300.0)):
        one.put(record(f"j{n}", "queued"), at=at)
    assert listing(listings, 150.0) == {"j1": "queued", "j2": "queued"}
    two.put(record("j1", "done"), at=200.0)

    def seen() -> bool:
        return listing(listings, 150.0) == {"j1": "done", "j2": "queued"}

    wait_for(seen, 5.0)  # the filesystem index: within the observer's latency
    two.close()
    one.close()
