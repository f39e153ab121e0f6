"""The one JSON encoding of every answer, and listings pre-encoded by stores.

Every answer is strict JSON (RFC 8259) in ASCII: no ``NaN`` or ``Infinity``
token, which browsers' ``JSON.parse`` refuses along with the whole answer,
and no character that needs an encoding other than ASCII to be sent.

A listing of 1,000 jobs is most of a ``jobs/status`` answer; stores that keep
each job's ``"job_id":status`` member already encoded (``member``) let the
answer be joined instead of encoded, byte for byte what ``encode`` would make.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from json.encoder import (  # type: ignore[attr-defined]  # not in typeshed
    c_make_encoder,
    encode_basestring_ascii,
)
from typing import Any

from .errors import StoreError

# Compact, ASCII-only (lone surrogates from a client stay encodable), strict,
# and built once: json.dumps with separators= builds an encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The encoder's C function called directly: ``JSONEncoder.encode`` gets to
# it through Python frames and closures made per call, a third of a ~2.8 µs
# record. Made per call, with its own circular-reference markers: a cycle
# is ValueError, as before (a shared encoder without markers would recurse
# in C instead). Where the C accelerator is missing, the encoder's own path.
def _encoded(value: Any) -> str:
    if c_make_encoder is None:
        return _ENCODER.encode(value)
    encoder = c_make_encoder(
        {}, _not_json, encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return "".join(encoder(value, 0))


def encode(value: Any) -> str:
    """``value`` as strict JSON; non-finite numbers become ``null``.

    A job file may hold ``NaN``, ``Infinity`` or ``1e999`` (Python's parser
    reads them as floats); they are written ``null``, as JavaScript's
    ``JSON.stringify`` writes them.
    """
    if type(value) is str:  # a status, mostly: no encoder to set up
        return encode_basestring_ascii(value)
    try:
        return _encoded(value)
    except ValueError:  # a non-finite float: the rare case pays for a copy
        return _encoded(_finite(value))


#: A string as ``encode`` writes it (the encoder's own C function).
string = encode_basestring_ascii


def scalar(value: Any) -> str:
    """``encode(value)``, the kinds an envelope or a page row holds written
    directly: the encoder's set-up costs more than a string or a number."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return encode(value)


def strict(value: Any) -> str:
    """``encode(value)``, but a non-finite number raises ``ValueError``:
    for what a store keeps, where ``null`` would lose the value silently."""
    return _ENCODER.encode(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_finite_key(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _finite_key(key: Any) -> Any:
    # A key is a name, not a number: keep the name JavaScript would print.
    if isinstance(key, float) and not math.isfinite(key):
        return "NaN" if math.isnan(key) else ("Infinity" if key > 0 else "-Infinity")
    return key


def member(job_id: str, status: Any) -> str:
    """``"job_id":<status>``, as ``encode`` writes it inside an object.

    Valid job ids are plain ASCII without quotes or backslashes, so quoting
    them needs no escaping.
    """
    return member_of_text(job_id, encode(status))


def member_of_text(job_id: str, text: str) -> str:
    """``member`` of a status already encoded (``text``)."""
    return f'"{job_id}":{text}'


def join_members(members: Iterable[str]) -> str:
    """The object text of ``members``: equal to ``encode`` of the dict."""
    return "{" + ",".join(members) + "}"


def status_of(job_id: str, member_text: str) -> Any:
    """The status a ``member`` text holds."""
    return json.loads(member_text[len(job_id) + 3 :])


def checked_object(text: str) -> str:
    """A store's pre-encoded listing, fit to send; raises ``StoreError``.

    Stores owe ``encode``'s own text (docs/writing-a-store.md), but a shared
    store may hold text that other writers, or older versions, wrote. Text
    that is not a JSON object is refused; JSON that is not strict ASCII
    (``NaN``, ``Infinity``, raw non-ASCII characters) is written again.
    """
    non_finite: list[str] = []

    def as_null(token: str) -> None:
        non_finite.append(token)

    try:
        value = json.loads(text, parse_constant=as_null)
    except (ValueError, RecursionError):
        raise StoreError("the store's listing is not valid JSON") from None
    if not isinstance(value, dict):
        raise StoreError("the store's listing is not a JSON object")
    return text if text.isascii() and not non_finite else encode(value)
