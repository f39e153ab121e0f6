"""Kept listings (``jobstatus_core.listing.Listings``) are exact: the same
text a fresh listing would give, dropped on a mark change, at most
``MAX_AGE_SECONDS`` old; and the time index lists what a fresh reading would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobstatus_backends.memory import MemoryStore
from jobstatus_backends.timeindex import TimeIndex
from jobstatus_core import Mark, Window, jsontext
from jobstatus_core.listing import MAX_AGE_SECONDS, Listings

from .helpers import Clock

pytestmark = pytest.mark.memory

times = st.integers(0, 20).map(float)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from("abcde"), times, st.booleans()),
        st.tuples(st.just("discard"), st.sampled_from("abcde")),
        st.tuples(st.just("clear")),
        st.tuples(st.just("list"), times),
    ),
    max_size=60,
)


@settings(max_examples=500, deadline=None)
@given(steps)
def test_time_index_listings_match_a_fresh_reading(script: list[tuple]) -> None:
    index = TimeIndex()
    truth: dict[str, tuple[float, str | None]] = {}
    for step in script:
        if step[0] == "set":
            _, job_id, at, has_status = step
            if has_status:
                index.set(job_id, at, f"s-{at}")
                truth[job_id] = (at, f"s-{at}")
            else:
                index.set(job_id, at)
                truth[job_id] = (at, None)
        elif step[0] == "discard":
            index.discard(step[1])
            truth.pop(step[1], None)
        elif step[0] == "clear":
            index.clear()
            truth.clear()
        else:
            cutoff = step[1]
            expected = jsontext.encode(
                {
                    job_id: status
                    for job_id, (at, status) in sorted(
                        truth.items(), key=lambda item: (item[1][0], item[0])
                    )
                    if at >= cutoff and status is not None
                }
            )
            assert jsontext.join_members(index.window(cutoff).members) == expected


class ControlledStore(MemoryStore):
    """A store whose mark and window the test sets, counting window calls."""

    def __init__(self) -> None:
        super().__init__()
        self.marked = Mark("e1", 1)
        self.members: list[str] = []
        self.oldest: float | None = None
        self.windows = 0

    def mark(self) -> Mark:
        return self.marked

    def window(self, cutoff: float) -> Window:
        self.windows += 1
        return Window(list(self.members), self.oldest)


def test_a_listing_is_kept_only_while_exact() -> None:
    store = ControlledStore()
    listings = Listings(store, timer=Clock(0.0), size=2)
    store.members, store.oldest = ['"a":"done"'], 15.0
    assert listings.json(10.0) == '{"a":"done"}'
    store.members = ['"changed":1']  # what the store would say now
    assert listings.json(10.0) == '{"a":"done"}'
    assert listings.json(15.0) == '{"a":"done"}'  # the oldest listed is still in
    assert store.windows == 1
    assert listings.json(15.5) == '{"changed":1}'  # it has left: read again
    assert listings.json(9.0) == '{"changed":1}'  # earlier may reach more jobs
    assert store.windows == 3


def test_an_empty_listing_is_exact_for_any_later_cutoff() -> None:
    store = ControlledStore()
    listings = Listings(store, timer=Clock(0.0))
    assert listings.json(20.0) == "{}"
    store.members = ['"late":1']
    assert listings.json(1e9) == "{}"
    assert store.windows == 1


def test_a_moved_mark_drops_every_kept_listing() -> None:
    store = ControlledStore()
    listings = Listings(store, timer=Clock(0.0))
    store.members, store.oldest = ['"a":"done"'], 100.0
    assert listings.json(10.0) == '{"a":"done"}'
    for n, moved in enumerate(
        (
            Mark("e1", 2),  # a change
            Mark("e2", 2),  # another life of the data, at the same head
            Mark("e2", 2, server="replica"),  # another server, same head
        )
    ):
        store.marked = moved
        store.members = [f'"a":{n}']
        assert listings.json(10.0) == f'{{"a":{n}}}'
    assert store.windows == 4


def test_only_the_last_size_listings_are_kept() -> None:
    store = ControlledStore()
    listings = Listings(store, timer=Clock(0.0), size=2)
    for cutoff in (10.0, 20.0, 30.0):
        store.oldest = cutoff
        listings.json(cutoff)
    assert store.windows == 3
    listings.json(30.0)
    listings.json(20.0)
    assert store.windows == 3
    listings.json(10.0)  # the first: dropped for the third
    assert store.windows == 4


def test_a_kept_listing_is_reused_for_at_most_max_age() -> None:
    store = ControlledStore()
    timer = Clock(100.0)
    listings = Listings(store, timer=timer)
    assert listings.json(10.0) == "{}"
    store.members = ['"edited":"by hand"']  # a change the mark does not show
    timer.now = 100.0 + MAX_AGE_SECONDS
    assert listings.json(10.0) == "{}"  # a second old: still reused
    timer.now = 100.001 + MAX_AGE_SECONDS
    assert listings.json(10.0) == '{"edited":"by hand"}'  # older: read again


def test_a_listing_read_while_the_mark_moved_is_not_kept() -> None:
    """The mark is read before the window: a window read after a change
    that the mark missed is not kept under the older mark."""
    store = ControlledStore()
    listings = Listings(store, timer=Clock(0.0))
    window = store.window

    def moving(cutoff: float) -> Window:
        store.marked = Mark("e1", 2)  # a change lands between mark and window
        return window(cutoff)

    store.window = moving  # type: ignore[method-assign]
    assert listings.json(0.0) == "{}"
    store.window = window  # type: ignore[method-assign]
    store.members = ['"a":"new"']
    assert listings.json(0.0) == '{"a":"new"}'
