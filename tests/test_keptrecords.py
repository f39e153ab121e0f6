"""Kept answers: given back only against their proof, within their bound."""

from __future__ import annotations

import sys
import threading
import tracemalloc

import pytest

from jobstatus_backends.keptrecords import ENTRY_OVERHEAD, SEEN_BITS, KeptRecords
from jobstatus_core import Row

pytestmark = pytest.mark.core


def row(job_id: str, status: str = '"done"') -> Row:
    return Row(job_id, status, 1.0, f"v-{job_id}", 1)


def counted(text: str, status: str = '"done"') -> int:
    return sys.getsizeof(text) + sys.getsizeof(status) + ENTRY_OVERHEAD


def test_a_text_is_given_back_only_against_its_proof() -> None:
    kept: KeptRecords[int] = KeptRecords(1 << 20)
    kept.keep("a", 7, row("a"), '{"job_id":"a"}')
    assert kept.get("a", 7) == (row("a"), '{"job_id":"a"}')
    assert kept.get("a", 8) is None
    assert kept.get("b", 7) is None
    kept.keep("a", 8, row("a"), '{"job_id":"a","x":1}')
    assert kept.get("a", 7) is None
    assert kept.get("a", 8) == (row("a"), '{"job_id":"a","x":1}')
    assert len(kept) == 1 and kept.size == counted('{"job_id":"a","x":1}')
    kept.clear()
    assert len(kept) == 0 and kept.size == 0 and kept.get("a", 8) is None


def test_the_job_read_longest_ago_goes_first() -> None:
    text = "x" * 100
    ids = [f"j{i}" for i in range(20)]
    kept: KeptRecords[int] = KeptRecords(20 * counted(text))
    for job_id in ids:
        kept.keep(job_id, 1, row(job_id), text)
    assert len(kept) == 20
    assert kept.get("j0", 1) is not None  # read again: now the latest
    kept.keep("new", 1, row("new"), text)
    assert "j0" in kept and "j1" not in kept and "new" in kept
    assert len(kept) == 20 and kept.size == kept.max_bytes


def test_an_entry_larger_than_a_sixteenth_of_the_bound_is_not_kept() -> None:
    kept: KeptRecords[int] = KeptRecords(16 * counted("x" * 1000))
    kept.keep("small", 1, row("small"), "x" * 1000)
    kept.keep("large", 1, row("large"), "x" * 1001)
    # The status counts too: a row's status is a second text.
    kept.keep("status", 1, row("status", '"' + "s" * 1010 + '"'), "x")
    assert "small" in kept and "large" not in kept and "status" not in kept


def test_the_bound_holds_in_memory_too() -> None:
    """What the entries really take (tracemalloc) stays within the bound."""
    bound = 2 << 20
    kept: KeptRecords[tuple[int, int, int, int]] = KeptRecords(bound)
    tracemalloc.start()
    try:
        for n in range(20_000):
            job_id = f"{n:016x}-{n}"
            text = f'{{"job_id":"{job_id}","job_status":"done","n":{n}}}'
            kept.keep(job_id, (n, 200, n * 10**9, n * 10**9), row(job_id), text)
            del job_id, text
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert 0 < len(kept) < 20_000 and kept.size <= bound
    assert used <= bound * 1.05, (used, kept.size)


def test_threads_keeping_and_reading_keep_the_count_exact() -> None:
    text = "y" * 100
    kept: KeptRecords[int] = KeptRecords(50 * counted(text))

    def work(n: int) -> None:
        for i in range(2000):
            job_id = f"j{(i * n) % 97}"
            kept.keep(job_id, i, row(job_id), text)
            kept.get(job_id, i)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 3, 7, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kept.size == len(kept) * counted(text) <= kept.max_bytes


def test_a_job_is_wanted_from_its_second_read() -> None:
    kept: KeptRecords[int] = KeptRecords(1 << 20)
    assert not kept.wants("a") and not kept.wants("a")  # asking notes nothing
    kept.read_once("a")
    assert kept.wants("a")
    kept.keep("b", 1, row("b"), "{}")
    assert kept.wants("b")  # kept already
    # Many jobs read once: the filter clears itself, and most of them are
    # still "read once" (false repeats only keep a job one read early).
    once = [f"once-{n}" for n in range(4 * SEEN_BITS // 8)]
    wanted = 0
    for job_id in once:
        wanted += kept.wants(job_id)
        kept.read_once(job_id)
    assert wanted < len(once) // 4
