"""Query parameters, validated like bodies (SPEC §7).

Unknown parameters are ignored; a bad value is ``400 Invalid parameter:
<name> …``. A parameter given twice where one value is expected takes the
first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from . import jsontext
from .problems import ApiError

Query = Mapping[str, Sequence[str]]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_STATUSES = 100


def invalid_parameter(name: str, detail: str) -> ApiError:
    return ApiError(400, f"Invalid parameter: {name} {detail}")


def first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def statuses(query: Query) -> frozenset[str] | None:
    """``status``, repeatable or comma-separated, as status JSON texts."""
    values = [
        part.strip()
        for value in query.get("status", ())
        for part in value.split(",")
        if part.strip()
    ]
    if not values:
        return None
    if len(values) > MAX_STATUSES:
        raise invalid_parameter("status", f"takes at most {MAX_STATUSES} statuses")
    if any(len(value) > 200 for value in values):
        raise invalid_parameter("status", "must be at most 200 characters")
    return frozenset(jsontext.encode(value) for value in values)


def decimal(text: str) -> float:
    """``text`` as a number written the plain way: ASCII, no ``_`` between
    digits, no space around (``inf`` and ``nan`` pass, for callers to refuse
    by name); raises ``ValueError``. ``float`` alone reads ``1_0``, `` 5``
    and full-width digits."""
    if not text.isascii() or "_" in text or text != text.strip():
        raise ValueError(f"not a plain number: {text!r}")
    return float(text)


def since_seconds(query: Query) -> float | None:
    raw = first(query, "since_seconds")
    if raw is None or raw == "":
        return None
    try:
        seconds = decimal(raw)
    except ValueError:
        raise invalid_parameter("since_seconds", "must be a number") from None
    if not math.isfinite(seconds):
        raise invalid_parameter("since_seconds", "must be finite")
    if seconds < 0:
        raise invalid_parameter("since_seconds", "must be >= 0")
    return seconds


def limit(query: Query) -> int:
    raw = first(query, "limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise invalid_parameter(
            "limit", f"must be a whole number from 1 to {MAX_LIMIT}"
        )
    value = int(raw)
    if not 1 <= value <= MAX_LIMIT:
        raise invalid_parameter(
            "limit", f"must be a whole number from 1 to {MAX_LIMIT}"
        )
    return value


def flag(query: Query, name: str) -> bool:
    raw = first(query, name)
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise invalid_parameter(name, "must be true or false")


def include_record(query: Query) -> bool:
    """``include`` (only ``record`` so far, comma-separated): one value,
    the first when given twice, as the other parameters that take one."""
    values = [part.strip() for part in (first(query, "include") or "").split(",")]
    values = [value for value in values if value]
    unknown = [value for value in values if value != "record"]
    if unknown:
        raise invalid_parameter("include", "must be record")
    return bool(values)


#: What a wait waits for: a status in the terminal set, or any change.
UNTIL = ("finished", "changed")


def until(query: Query) -> str:
    """``until`` (default ``finished``; empty is the default, as for the
    other parameters)."""
    raw = first(query, "until")
    if raw is None or raw == "":
        return "finished"
    if raw not in UNTIL:
        raise invalid_parameter("until", "must be finished or changed")
    return raw
