"""Kept listings are exact: the same text a fresh listing would give."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobstatus_backends.listingcache import ListingCache
from jobstatus_backends.timeindex import TimeIndex
from jobstatus_core import jsontext

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


def test_cache_keeps_a_listing_only_while_exact() -> None:
    cache = ListingCache(size=2)
    cache.put(1, 10.0, 15.0, "A")
    assert cache.get(1, 10.0) == "A"
    assert cache.get(1, 15.0) == "A"  # the oldest listed job is still in
    assert cache.get(1, 15.5) is None  # it has left
    assert cache.get(1, 9.0) is None  # an earlier start may reach more jobs
    cache.put(1, 20.0, None, "{}")
    assert cache.get(1, 1e9) == "{}"  # nothing listed: exact for any later start
    cache.put(1, 30.0, 31.0, "C")  # the third: the first ("A") goes
    assert cache.get(1, 12.0) is None
    assert cache.get(2, 30.0) is None  # the store changed: nothing is kept
    assert cache.version == 2
    assert cache.get(2, 20.0) is None


def test_a_kept_listing_is_reused_for_at_most_max_age() -> None:
    clock = Clock(100.0)
    cache = ListingCache(max_age=1.0, clock=clock)
    cache.put(1, 10.0, None, "{}")
    clock.now = 101.0
    assert cache.get(1, 10.0) == "{}"  # a second old: still reused
    clock.now = 101.001
    assert cache.get(1, 10.0) is None  # older: read again, whatever the version
