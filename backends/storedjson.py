"""JSON texts read back from stores that other programs may write too.

A store's own writes are ``jsontext``'s compact ASCII JSON; a row or key
written by another program (or by hand) may be bare text, hold non-ASCII
characters or ``NaN``. What such a value becomes is decided here, once for
every store: a status that is not strict JSON is that text, as a JSON
string; a record that is not a JSON object is an error naming the job.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jobstatus_core import Record, StoreError, jsontext

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e999: valid JSON text, but no answer could carry the float.
        raise ValueError(f"{text} is out of range")
    return value


# Built once: json.loads with hooks builds a decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def loads(text: str) -> Any:
    """``text`` parsed as strict JSON: no NaN, no Infinity, no overflow."""
    return _DECODER.decode(text)


@lru_cache(maxsize=4096)  # a store holds a few statuses, read on every row
def status_text(text: str) -> str:
    """A stored status as JSON text: itself when it is strict JSON, else
    the JSON string of the text (``status``), as rows must carry it."""
    try:
        loads(text)
    except (ValueError, RecursionError):
        return jsontext.encode(text)
    return text


def status(text: str) -> Any:
    """A stored status: its JSON value, or the text itself if it is not JSON."""
    try:
        return loads(text)
    except (ValueError, RecursionError):
        return text


def record(job_id: str, text: str | bytes) -> Record:
    """A stored record, which must be a JSON object (as text, or as bytes
    another program stored: UTF-8, read as text is)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        value = loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise StoreError(f"the record of job {job_id} is not a JSON object")
    return value


def ascii_only(text: str) -> str:
    """Valid JSON ``text`` with every non-ASCII character escaped, as
    ``jsontext.encode`` writes them (they can only occur inside strings)."""
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda match: json.dumps(match.group())[1:-1], text)


def kept_text(record: Mapping[str, Any]) -> str:
    """``record`` as answers write it after reading it back (what a store
    keeps for ``RecordTexts``): parsed once, so that keys ``1`` and ``"1"``
    are one key, as a reader of the JSON sees them. Raises ``ValueError``
    for NaN or Infinity, ``TypeError`` for what is not JSON."""
    return jsontext.strict(json.loads(jsontext.strict(record)))
