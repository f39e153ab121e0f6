"""Request validation: media type, JSON body, ``job_id`` and ``since_seconds``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from .problems import invalid_content_length, invalid_json, invalid_payload
from .types import Headers, RequestId

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
JOB_ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.'"


def is_valid_job_id(value: object) -> bool:
    return isinstance(value, str) and JOB_ID_PATTERN.fullmatch(value) is not None


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or any ``*/*+json``, parameters ignored."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return True
    kind, slash, subtype = media_type.partition("/")
    return bool(kind) and slash == "/" and subtype.endswith("+json")


def content_length(headers: Headers) -> int | None:
    """The declared body length, or None; raises ``ApiError`` (400) when bad.

    ASCII digits only: ``str.isdigit`` also accepts ``²`` and ``٣``, which
    ``int`` then refuses or reads as a number no client meant.
    """
    value = headers.get("content-length", "")
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise invalid_content_length()
    return int(value)


#: What RFC 8259 calls whitespace (``bytes.strip`` also takes \v and \f).
_JSON_WHITESPACE = b" \t\n\r"


def _integer(digits: str) -> int | float:
    # Past Python's int_max_str_digits (4,300) int() refuses the digits; such
    # a number is past every float too, and is read as the float it
    # overflows to, as 1e400 is.
    try:
        return int(digits)
    except ValueError:
        return float(digits)


#: ``json``, but for integers of more digits than int() takes (rare: tried
#: only after ``json.loads`` refused them).
_LONG_INTEGERS = json.JSONDecoder(parse_int=_integer)

#: A run of digits as long as the longest 64-bit integers: a number written
#: with one may be read by a fast parser as a float where ``json`` reads an
#: exact int (orjson does, past 64 bits).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def parse_body(
    body: bytes, fast: Callable[[bytes], Any] | None = None
) -> dict[str, Any]:
    """Parse a request body into a JSON object; an empty body means ``{}``.

    ``fast``: a faster parser (``orjson.loads``) tried first. Its answer is
    taken only when it is an object and the body has no 19-digit run;
    whatever it refuses (NaN, lone surrogates, numbers out of range, bad
    JSON) is parsed by ``json``, so the values read and the errors worded
    are ``json``'s either way (tests/test_validation.py compares them).
    """
    if fast is not None and not _LONG_DIGITS.search(body):
        try:
            value = fast(body)
        except ValueError:  # orjson's JSONDecodeError is one
            value = None
        if type(value) is dict:
            return value
    if not body.strip(_JSON_WHITESPACE):
        return {}
    try:
        # RFC 8259: JSON exchanged between systems is UTF-8. json.loads(bytes)
        # would silently accept UTF-16/32, so decode strictly first.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_json("the body is not UTF-8") from None
    try:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:  # digits past int(): valid JSON all the same
            value = _LONG_INTEGERS.decode(text)
    except RecursionError:
        raise invalid_json("nested too deep") from None
    except ValueError as exc:
        raise invalid_json(_json_error_detail(exc)) from None
    if not isinstance(value, dict):
        raise invalid_payload(f"expected a JSON object, got {_json_type(value)}")
    return value


def job_id_of(payload: dict[str, Any]) -> str:
    if "job_id" not in payload:
        raise invalid_payload("job_id is required")
    job_id = payload["job_id"]
    if not isinstance(job_id, str):
        raise invalid_payload(f"job_id must be a string, got {_json_type(job_id)}")
    if not is_valid_job_id(job_id):
        raise invalid_payload(f"job_id must be {JOB_ID_RULE}")
    return job_id


def since_seconds_of(payload: dict[str, Any], default: float) -> float:
    value = payload.get("since_seconds")
    if value is None:
        return default
    # bool is an int subclass in Python, but true/false are not numbers in JSON.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid_payload(
            f"since_seconds must be a number, got {_json_type(value)}"
        )
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        raise invalid_payload("since_seconds must be finite") from None
    if not math.isfinite(seconds):
        raise invalid_payload("since_seconds must be finite")
    if seconds < 0:
        raise invalid_payload("since_seconds must be >= 0")
    return seconds


def request_id_of(payload: dict[str, Any]) -> RequestId:
    """The body's ``id``, echoed when it is a string or a finite number."""
    value = payload.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        # Huge integers echo as null rather than as a 10,000-digit number.
        return value if abs(value) < 2**63 else None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _json_error_detail(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        # Some of json's messages end with "at" ("Unterminated string
        # starting at"): the place follows once.
        return f"{exc.msg.removesuffix(' at')} at line {exc.lineno} column {exc.colno}"
    return "could not parse the body"
