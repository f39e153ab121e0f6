"""Answer texts remembered by stored text (backends/answertexts.py)."""

from __future__ import annotations

import json

import pytest

from jobstatus_backends.answertexts import MAX_ENTRY_CHARS, AnswerTexts
from jobstatus_core import StoreError, jsontext

pytestmark = pytest.mark.core


def test_the_answer_text_is_the_encoded_record() -> None:
    texts = AnswerTexts()
    stored = '{"job_id": "a", "n": 1e2, "s": "\\u00e9t\\u00e9", "job_status": "done"}'
    assert texts.of("a", stored) == jsontext.encode(json.loads(stored))
    # Remembered: the same text object, not a new encoding.
    assert texts.of("a", stored) is texts.of("a", stored)


def test_another_stored_text_is_another_answer() -> None:
    texts = AnswerTexts()
    first = texts.of("a", '{"job_status": "running"}')
    assert texts.of("a", '{"job_status": "done"}') != first
    assert texts.of("a", '{"job_status": "running"}') == first


def test_a_stored_text_that_is_no_object_is_refused_each_time() -> None:
    texts = AnswerTexts()
    for _ in range(2):
        with pytest.raises(StoreError, match="not a JSON object"):
            texts.of("a", "[1, 2]")
    assert len(texts) == 0


def test_what_is_remembered_is_bounded() -> None:
    texts = AnswerTexts(max_chars=10_000)
    for n in range(1_000):
        texts.of("a", f'{{"n": {n}}}')
    assert 0 < len(texts) < 1_000
    texts = AnswerTexts()
    long = '{"s": "' + "x" * MAX_ENTRY_CHARS + '"}'
    assert texts.of("a", long) == long.replace(" ", "")
    assert len(texts) == 0  # one would crowd out the thousands polled
