"""A conformance kit for stores: run it against your own store.

Subclass ``StoreConformance`` in a pytest module and give it a ``store``
fixture that yields a fresh, empty store (and closes it)::

    import pytest
    from jobstatus_backends.conformance import StoreConformance

    @pytest.fixture
    def store(tmp_path):
        store = MyStore(tmp_path / "jobs")
        yield store
        store.close()

    class TestMyStore(StoreConformance):
        pass

Every built-in store passes it (tests/test_protocol.py). A store that
declares ``Expiring`` (retention) also runs ``ExpiryConformance`` the same way.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from jobstatus_core import (
    Expiring,
    InvalidRecord,
    Query,
    RecordTexts,
    Row,
    Stale,
    Store,
    Tombstone,
    jsontext,
)
from jobstatus_core.protocol import MAX_RECORD_DEPTH

from .recorder import Recorder


def _record(job_id: str, status: Any = "done", **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "job_status": status, **extra}


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def _s(status: Any) -> str:
    return jsontext.encode(status)


class StoreConformance:
    """The protocol's promises, one test each."""

    # -- reading one and many ------------------------------------------------

    def test_read_unknown_is_none(self, store: Store) -> None:
        assert store.read("nope") is None
        assert store.read_many(["nope", "nada"]) == {}

    def test_read_returns_the_row_and_record(self, store: Store) -> None:
        record = _record("a", "done", response={"x": [1, "ü"]}, n=None)
        store.put(record, at=100.0)
        row = store.read("a")
        assert row is not None
        assert row.job_id == "a" and row.record == record
        assert row.status == _s("done") and row.updated_at == 100.0
        assert isinstance(row.version, str) and row.version
        assert isinstance(row.position, int) and row.position > 0

    def test_read_many_reads_those_that_exist(self, store: Store) -> None:
        store.put(_record("a"), at=1.0)
        store.put(_record("b", "running"), at=2.0)
        rows = store.read_many(["b", "zz", "a"])
        assert set(rows) == {"a", "b"}
        assert rows["b"].record == _record("b", "running")

    # -- versions and the change order --------------------------------------

    def test_every_change_moves_version_position_and_mark(self, store: Store) -> None:
        start = store.mark()
        store.put(_record("a", "queued"), at=1.0)
        first = store.read("a")
        mark = store.mark()
        store.put(_record("a", "queued"), at=1.0)
        second = store.read("a")
        assert first is not None and second is not None
        assert second.version != first.version
        assert start.head < first.position <= mark.head < second.position
        assert second.position <= store.mark().head
        assert store.mark().epoch == start.epoch

    def test_page_is_in_change_order_and_resumes(self, store: Store) -> None:
        for job_id in ("a", "b", "c", "d"):
            store.put(_record(job_id), at=10.0)
        store.put(_record("b", "failed"), at=5.0)  # b moves to the end
        rows = store.page(Query(limit=10))
        assert [row.job_id for row in rows] == ["a", "c", "d", "b"]
        assert [row.record for row in rows] == [None] * 4
        first = store.page(Query(limit=2))
        rest = store.page(Query(after=first[-1].position, limit=10))
        assert [row.job_id for row in first + rest] == ["a", "c", "d", "b"]
        store.put(_record("a", "running"), at=11.0)
        again = store.page(Query(after=rest[-1].position, limit=10))
        assert [(row.job_id, row.status) for row in again] == [("a", _s("running"))]

    def test_page_filters_by_status_and_window(self, store: Store) -> None:
        store.put(_record("a", "done"), at=10.0)
        store.put(_record("b", "failed"), at=20.0)
        store.put(_record("c", "done"), at=30.0)
        store.put(_record("d", {"stage": 1}), at=40.0)
        done = store.page(Query(statuses=frozenset({_s("done")}), limit=10))
        assert [row.job_id for row in done] == ["a", "c"]
        both = store.page(
            Query(statuses=frozenset({_s("done"), _s("failed")}), limit=10)
        )
        assert [row.job_id for row in both] == ["a", "b", "c"]
        recent = store.page(Query(cutoff=20.0, limit=10))
        assert [row.job_id for row in recent] == ["b", "c", "d"]
        odd = store.page(Query(statuses=frozenset({_s({"stage": 1})}), limit=10))
        assert [row.job_id for row in odd] == ["d"]

    def test_page_with_records(self, store: Store) -> None:
        store.put(_record("a", response={"url": "x"}), at=1.0)
        (row,) = store.page(Query(limit=5, records=True))
        assert row.record == _record("a", response={"url": "x"})

    def test_page_limit(self, store: Store) -> None:
        for i in range(25):
            store.put(_record(f"j{i:02}"), at=float(i))
        seen: list[str] = []
        after = 0
        while True:
            rows = store.page(Query(after=after, limit=7))
            if not rows:
                break
            assert len(rows) <= 7
            seen += [row.job_id for row in rows]
            after = rows[-1].position
        assert seen == [f"j{i:02}" for i in range(25)]

    # -- counts ---------------------------------------------------------------

    def test_counts(self, store: Store) -> None:
        store.put(_record("a", "done"), at=10.0)
        store.put(_record("b", "failed"), at=20.0)
        store.put(_record("c", "done"), at=30.0)
        assert store.counts(None, None) == {_s("done"): 2, _s("failed"): 1}
        assert store.counts(frozenset({_s("done")}), None) == {_s("done"): 2}
        assert store.counts(None, 20.0) == {_s("done"): 1, _s("failed"): 1}
        store.put(_record("a", "failed"), at=40.0)
        assert store.counts(None, None) == {_s("done"): 1, _s("failed"): 2}

    # -- the Toolkit listing --------------------------------------------------

    def test_window_lists_members_in_time_order(self, store: Store) -> None:
        store.put(_record("b", "done"), at=20.0)
        store.put(_record("a", "running"), at=10.0)
        store.put(_record("c", "done"), at=30.0)
        window = store.window(15.0)
        assert list(window.members) == ['"b":"done"', '"c":"done"']
        assert window.oldest == 20.0
        empty = store.window(31.0)
        assert list(empty.members) == [] and empty.oldest is None
        assert json.loads("{" + ",".join(store.window(0).members) + "}") == {
            "a": "running",
            "b": "done",
            "c": "done",
        }

    # -- conditional writes ---------------------------------------------------

    def test_swap_applies_only_at_the_expected_version(self, store: Store) -> None:
        assert store.swap(_record("a", "queued"), expected=None, at=1.0) is True
        assert store.swap(_record("a", "running"), expected=None, at=2.0) is False
        row = store.read("a")
        assert row is not None and row.record == _record("a", "queued")
        assert store.swap(_record("a", "running"), expected=row.version, at=2.0)
        assert not store.swap(_record("a", "done"), expected=row.version, at=3.0)
        after = store.read("a")
        assert after is not None and after.record == _record("a", "running")
        assert after.updated_at == 2.0 and after.position > row.position

    def test_swap_loses_no_update_between_threads(self, store: Store) -> None:
        store.put(_record("n", "running", count=0), at=1.0)

        def bump() -> None:
            for _ in range(25):
                while True:
                    row = store.read("n")
                    assert row is not None and row.record is not None
                    new = dict(row.record, count=row.record["count"] + 1)
                    if store.swap(new, expected=row.version):
                        break

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.get("n") == _record("n", "running", count=100)

    def test_a_record_nested_deeper_than_a_reader_parses_is_refused(
        self, store: Store
    ) -> None:
        # The record is the first level; its response nests the rest.
        deepest = _record("deep", response=_nested(MAX_RECORD_DEPTH - 1))
        store.put(deepest)
        assert store.get("deep") == deepest
        assert store.read_many(["deep"])["deep"].record == deepest
        over = _record("over", response=_nested(MAX_RECORD_DEPTH))
        with pytest.raises(InvalidRecord):
            store.put(over)
        with pytest.raises(InvalidRecord):
            store.swap(over, expected=None)
        # Deeper than json.dumps itself can go: still InvalidRecord.
        with pytest.raises(InvalidRecord):
            Recorder(store).done("over", _nested(2_000))
        assert store.read("over") is None

    def test_a_time_no_date_can_say_is_refused(self, store: Store) -> None:
        for at in (float("nan"), float("inf"), -1.0, 1.7e12):
            with pytest.raises(InvalidRecord):
                store.put(_record("a"), at=at)
            with pytest.raises(InvalidRecord):
                store.swap(_record("a"), expected=None, at=at)
        assert store.read("a") is None

    # -- the recording rules, through the store ------------------------------

    def test_recorder_moves_forward_only(self, store: Store) -> None:
        clock = iter(float(t) for t in range(1, 100)).__next__
        recorder = Recorder(store, clock=clock)
        assert recorder.queued("job", task="resize")
        assert recorder.running("job")
        assert recorder.progress("job", 1, 2, "half")
        assert recorder.done("job", {"url": "x"})
        assert not recorder.running("job")  # late: ignored
        assert not recorder.failed("job", "late")  # the first terminal stays
        assert recorder.meta("job", owner="me")
        record = store.get("job")
        assert record is not None
        assert record["job_status"] == "done" and record["response"] == {"url": "x"}
        assert record["task"] == "resize" and record["meta"] == {"owner": "me"}
        assert record["progress"] == {"done": 1, "total": 2, "message": "half"}
        assert record["attempt"] == 1
        assert record["created_at"] < record["started_at"] < record["finished_at"]
        assert recorder.running("job", attempt=2)  # a retry starts over
        retried = store.get("job")
        assert retried is not None and retried["job_status"] == "running"
        assert retried["attempt"] == 2 and retried["task"] == "resize"
        assert "progress" not in retried and retried["response"] is None
        assert not recorder.done("job", attempt=1)
        assert dict(store.changed_since(0)) == {"job": "running"}

    def test_changed_since_and_get_agree_with_rows(self, store: Store) -> None:
        store.put(_record("a", "done"), at=5.0)
        store.put(_record("b", None), at=6.0)
        assert dict(store.changed_since(0)) == {"a": "done", "b": None}
        assert store.get("a") == _record("a", "done")
        assert isinstance(store.read("b"), Row)

    def test_record_texts_are_the_encoded_records(self, store: Store) -> None:
        # Only for stores that declare RecordTexts; the rest pass as is.
        record = _record("a", "done", response={"x": [1, "ü", 0.5]}, n=None)
        store.put(record, at=5.0)
        # Keys 1 and "1" are one key to whoever reads the JSON.
        store.put(_record("b", "done", response={1: "one", "1": "uno"}), at=6.0)
        if isinstance(store, RecordTexts):
            found = store.read_text("a")
            assert found is not None and found[1] == jsontext.encode(record)
            other = store.read_text("b")
            assert other is not None
            assert other[1] == jsontext.encode(store.get("b"))
            assert '"1":"uno"' in other[1] and '"1":"one"' not in other[1]
            assert found[0].version == store.read("a").version  # type: ignore[union-attr]
            assert store.read_text("nope") is None


class ExpiryConformance:
    """The promises of ``Expiring``, one test each; the ``store`` fixture
    yields a fresh, empty store that declares it."""

    def test_the_store_declares_it(self, store: Store) -> None:
        assert isinstance(store, Expiring)

    def test_stale_selects_by_status_and_age_oldest_first(self, store: Any) -> None:
        store.put(_record("new", "done"), at=50.0)
        store.put(_record("b", "done"), at=20.0)
        store.put(_record("a", "done"), at=20.0)
        store.put(_record("f", "failed"), at=10.0)
        store.put(_record("r", "running"), at=5.0)
        store.put(_record("x", {"odd": 1}), at=1.0)
        done = store.stale(Stale(before=30.0, statuses=frozenset({_s("done")})))
        assert [row.job_id for row in done] == ["a", "b"]
        assert all(row.record is None and row.version for row in done)
        other = store.stale(
            Stale(before=30.0, other_than=frozenset({_s("done"), _s("failed")}))
        )
        assert [row.job_id for row in other] == ["x", "r"]
        every = store.stale(Stale(before=100.0, limit=3))
        assert [row.job_id for row in every] == ["x", "r", "f"]
        assert store.stale(Stale(before=1.0)) == []

    def test_expire_leaves_a_tombstone_and_hides_the_job(self, store: Any) -> None:
        store.put(_record("a", "done", response={"big": "x" * 100}), at=10.0)
        store.put(_record("b", "done"), at=11.0)
        before = store.mark()
        (row,) = store.stale(Stale(before=10.5))
        (tomb,) = store.expire([row], at=1000.0)
        assert isinstance(tomb, Tombstone)
        assert (tomb.job_id, tomb.status, tomb.expired_at) == ("a", _s("done"), 1000.0)
        assert tomb.record() == {
            "job_id": "a",
            "job_status": "done",
            "expired_at": 1000.0,
        }
        assert before.head < tomb.position <= store.mark().head
        assert store.read("a") is None and store.get("a") is None
        assert store.read_many(["a", "b"]).keys() == {"b"}
        assert [r.job_id for r in store.page(Query(limit=10))] == ["b"]
        assert store.counts(None, None) == {_s("done"): 1}
        assert list(store.window(0).members) == ['"b":"done"']
        assert dict(store.changed_since(0)) == {"b": "done"}
        assert store.tombstones(["a", "b", "zz"]) == {"a": tomb}
        assert store.buried(Query(limit=10)) == [tomb]
        assert store.stale(Stale(before=10.5)) == []

    def test_expire_skips_a_job_changed_or_expired_meanwhile(self, store: Any) -> None:
        store.put(_record("a", "done"), at=10.0)
        store.put(_record("b", "done"), at=10.0)
        rows = store.stale(Stale(before=20.0))
        store.put(_record("a", "running"), at=10.0)  # rewritten: stays
        tombs = store.expire([*rows, Row("ghost", _s("done"), 1.0, "v", 1)], at=99.0)
        assert [t.job_id for t in tombs] == ["b"]
        assert store.expire(rows, at=100.0) == []  # b is expired once
        assert store.get("a") == _record("a", "running")
        assert store.tombstones(["a", "b"]).keys() == {"b"}

    def test_a_job_written_again_is_alive_again(self, store: Any) -> None:
        store.put(_record("a", "done"), at=10.0)
        store.put(_record("b", "done"), at=10.0)
        store.expire(store.stale(Stale(before=20.0)), at=50.0)
        store.put(_record("a", "queued"), at=60.0)
        assert store.get("a") == _record("a", "queued")
        assert store.tombstones(["a"]) == {}
        assert store.swap(_record("b", "queued"), expected=None, at=61.0)
        assert store.tombstones(["a", "b"]) == {} and store.buried(Query()) == []
        assert [r.job_id for r in store.page(Query(limit=10))] == ["a", "b"]

    def test_buried_is_in_change_order_and_filters(self, store: Any) -> None:
        for i, status in enumerate(["done", "failed", "done", "cancelled"]):
            store.put(_record(f"j{i}", status), at=float(i))
        tombs = store.expire(store.stale(Stale(before=10.0)), at=20.0)
        assert [t.job_id for t in tombs] == ["j0", "j1", "j2", "j3"]
        positions = [t.position for t in tombs]
        assert positions == sorted(positions) and len(set(positions)) == 4
        assert store.buried(Query(limit=10)) == tombs
        assert store.buried(Query(after=positions[1], limit=10)) == tombs[2:]
        assert store.buried(Query(limit=2)) == tombs[:2]
        done = store.buried(Query(statuses=frozenset({_s("done")}), limit=10))
        assert [t.job_id for t in done] == ["j0", "j2"]

    def test_forget_drops_old_tombstones_only(self, store: Any) -> None:
        store.put(_record("a", "done"), at=1.0)
        store.put(_record("b", "done"), at=2.0)
        store.put(_record("c", "done"), at=3.0)
        rows = store.stale(Stale(before=10.0))
        store.expire(rows[:2], at=100.0)
        store.expire(rows[2:], at=200.0)
        assert store.forget(before=150.0, limit=1) == 1
        assert store.forget(before=150.0, limit=10) == 1
        assert store.forget(before=150.0, limit=10) == 0
        assert store.tombstones(["a", "b", "c"]).keys() == {"c"}
        assert [t.job_id for t in store.buried(Query())] == ["c"]

    def test_two_purgers_expire_each_job_once(self, store: Any) -> None:
        for i in range(60):
            store.put(_record(f"j{i:02}", "done"), at=float(i))
        rows = store.stale(Stale(before=1000.0, limit=1000))
        results: list[list[Tombstone]] = []

        def purge() -> None:
            results.append(store.expire(rows, at=2000.0))

        threads = [threading.Thread(target=purge) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expired = [t.job_id for result in results for t in result]
        assert sorted(expired) == [f"j{i:02}" for i in range(60)]
        assert store.page(Query(limit=10)) == []
