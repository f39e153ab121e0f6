"""Stored record texts and the text answers write for each, remembered.

A store that keeps each record as its writer sent it (Redis) parses it and
encodes it again for every answer that carries it: 5 to 6 µs of a ~90 µs
request. The answer's text is a function of the stored text alone, so the
last few thousand are remembered: a polled job's text is looked up, not
parsed. Never stale: the key is the whole stored text, compared whole.
"""

from __future__ import annotations

import threading

from jobstatus_core import jsontext

from . import storedjson

#: Text remembered (stored and answer texts, in characters) before all of it
#: is let go at once: a few thousand Toolkit records.
MAX_CHARS = 8 << 20
#: A stored text longer than this is never remembered: one would crowd out
#: the thousands polled.
MAX_ENTRY_CHARS = 64 << 10


class AnswerTexts:
    """Stored text -> ``jsontext.encode`` of the record it holds.

    Thread-safe: a look-up takes no lock (a dict's ``get`` is atomic), a
    new entry takes one."""

    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        self._max_chars = max_chars
        self._texts: dict[str, str] = {}
        self._chars = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._texts)

    def of(self, job_id: str, stored: str) -> str:
        """The answer's text of the record ``stored`` holds; raises
        ``StoreError`` as ``storedjson.record`` does (not a JSON object)."""
        text = self._texts.get(stored)
        if text is not None:
            return text
        text = jsontext.encode(storedjson.record(job_id, stored))
        size = len(stored) + len(text)
        if len(stored) <= MAX_ENTRY_CHARS:
            with self._lock:
                if self._chars + size > self._max_chars:
                    # All at once: no order to keep per look-up, and the
                    # polled jobs come back on their next read.
                    self._texts.clear()
                    self._chars = 0
                self._texts[stored] = text
                self._chars += size
        return text
