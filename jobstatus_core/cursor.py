"""Cursors of ``GET /v1/jobs``: opaque, tamper-evident, bound to their filter.

A cursor is ``<payload>.<signature>``: the payload, base64url of a small JSON
array ``[position, epoch, filter digest]``, and an HMAC-SHA256 of it (first 16
bytes) under the service's secret, which instances sharing a store share.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass

from .problems import ApiError

_SIGNATURE_BYTES = 16


@dataclass(frozen=True, slots=True)
class Cursor:
    position: int
    epoch: str


@functools.lru_cache(maxsize=256)
def filter_digest(statuses: frozenset[str] | None, since: float | None) -> str:
    """What a cursor is bound to: the query's filter, cursor and limit aside.
    Kept for the filters asked most (every page asks, and the same few)."""
    canonical = json.dumps(
        [sorted(statuses) if statuses is not None else None, since],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(cursor: Cursor, digest: str, secret: bytes) -> str:
    payload = _b64(
        json.dumps(
            [cursor.position, cursor.epoch, digest], separators=(",", ":")
        ).encode()
    )
    return f"{payload}.{_b64(_sign(payload, secret))}"


#: The largest position a store can hold (SQLite's and PostgreSQL's 64-bit
#: integers): a cursor past it was never made by a store, only signed.
MAX_POSITION = 2**63 - 1


def decode(text: str, digest: str, secret: bytes) -> Cursor:
    """The cursor ``text`` holds; ``400 Invalid cursor`` when it was altered or
    made for another filter."""
    payload, dot, signature = text.partition(".")
    if not dot or len(text) > 512:
        raise invalid_cursor()
    try:
        given = _unb64(signature)
        fields = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        raise invalid_cursor() from None
    if not hmac.compare_digest(given, _sign(payload, secret)):
        raise invalid_cursor()
    if not (
        isinstance(fields, list)
        and len(fields) == 3
        and isinstance(fields[0], int)
        and not isinstance(fields[0], bool)
        and 0 <= fields[0] <= MAX_POSITION
        and isinstance(fields[1], str)
        and isinstance(fields[2], str)
    ):
        raise invalid_cursor()
    position, epoch, bound = fields
    if bound != digest:
        raise ApiError(400, "Invalid cursor: made for another filter")
    return Cursor(position, epoch)


def invalid_cursor() -> ApiError:
    return ApiError(400, "Invalid cursor")


def cursor_expired() -> ApiError:
    return ApiError(410, "Cursor expired")


def _sign(payload: str, secret: bytes) -> bytes:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return digest[:_SIGNATURE_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
