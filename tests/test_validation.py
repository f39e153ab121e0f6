"""Request bodies read with the fast parser are read as ``json`` reads them."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobstatus_core.problems import ApiError
from jobstatus_core.validation import parse_body

from .test_core import JSON_VALUES

#: Bodies where orjson and json part ways, or nearly: each must be read by
#: ``parse_body`` with orjson exactly as without it.
EDGES = [
    b"",
    b"   \n",
    b'{"a": 1}',
    b'\t{"a": 1}\r\n',
    b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
    b'{"a": "\x01"}',  # a raw control character
    b'{"a": 1, "a": 2}',
    b'{"a": -0}',
    b'{"a": -0.0}',
    b'{"a": 1e400}',
    b'{"a": -1.7976931348623157e309}',
    b'{"a": 2.2250738585072011e-308}',
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'{"a": "\\ud800"}',  # a lone surrogate, escaped
    b'{"a": "\xed\xa0\x80"}',  # one encoded: not UTF-8
    b'{"a": 9223372036854775807}',
    b'{"a": 9223372036854775808}',
    b'{"a": 18446744073709551615}',
    b'{"a": 18446744073709551616}',
    b'{"a": -9223372036854775809}',
    b'{"id": 123456789012345678901234567890}',
    b'{"a": 0.1234567890123456789}',
    b'{"a": 1234567890123456789.5}',
    b'{"a": "\\u0000", "\\u00e9": [1, 2, {"b": null}]}',
    b'{"a": 1}\x00',
    b'{"a": 1}\x0b',
    b"\x0b",  # not JSON's whitespace: not an empty body either
    b"\x0c \n",
    b'{"a": ' + b"9" * 4301 + b"}",  # more digits than int() takes
    b'{"a": "x',
    b'{"a": 01}',
    b'{"a": 1.}',
    b'{"a": .5}',
    b"[1, 2]",
    b'"text"',
    b"null",
    b"{",
    b"[" * 2000 + b"]" * 2000,
    b'{"a": ' * 2000 + b"1" + b"}" * 2000,
]


def outcome(body: bytes, fast: Any = None) -> tuple[str, str]:
    """What ``parse_body`` gives, as text that tells int from float, -0.0
    from 0.0 and NaN from null: the value's repr, or the error's status and
    message."""
    try:
        return "value", repr(parse_body(body, fast))
    except ApiError as err:
        return "error", f"{err.status} {err.message}"


@pytest.mark.parametrize("body", EDGES)
def test_the_fast_parser_reads_each_edge_as_json_does(body: bytes) -> None:
    assert outcome(body, orjson.loads) == outcome(body)


def test_a_long_integer_is_read_exactly() -> None:
    # orjson reads integers past 64 bits as floats; json exactly.
    value = parse_body(b'{"id": 123456789012345678901234567890}', orjson.loads)
    assert value["id"] == 123456789012345678901234567890
    assert type(value["id"]) is int


def test_json_read_past_python_limits_or_whitespace() -> None:
    # More digits than Python's int() takes (4,300) are still JSON: read as
    # the float they overflow to, as 1e400 is, not "Invalid JSON".
    for digits in (4_300, 4_301, 10_000):
        value = parse_body(b'{"a": ' + b"9" * digits + b"}")
        assert value == {"a": 10**digits - 1 if digits <= 4_300 else math.inf}
    assert outcome(b"\x0b") == (
        "error",
        "400 Invalid JSON: Expecting value at line 1 column 1",
    )
    assert outcome(b" \t\r\n") == ("value", "{}")
    assert outcome(b'{"a": "x') == (
        "error",
        "400 Invalid JSON: Unterminated string starting at line 1 column 7",
    )


def test_the_fast_parser_is_used_when_it_agrees() -> None:
    calls: list[bytes] = []

    def counting(body: bytes) -> Any:
        calls.append(body)
        return orjson.loads(body)

    assert parse_body(b'{"job_id": "a"}', counting) == {"job_id": "a"}
    assert calls == [b'{"job_id": "a"}']


@settings(max_examples=400, deadline=None)
@given(
    value=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
)
def test_the_fast_parser_reads_any_object_as_json_does(
    value: dict[str, Any], ascii_only: bool, indent: int | None
) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode(
        "utf-8", "surrogatepass"
    )
    assert outcome(body, orjson.loads) == outcome(body)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_the_fast_parser_reads_any_bytes_as_json_does(body: bytes) -> None:
    assert outcome(body, orjson.loads) == outcome(body)


def test_floats_keep_their_sign_and_nan_its_kind() -> None:
    # The outcome's repr tells them apart: a check of the check.
    assert outcome(b'{"a": -0.0}') != outcome(b'{"a": 0.0}')
    value = parse_body(b'{"a": NaN}', orjson.loads)
    assert math.isnan(value["a"])
