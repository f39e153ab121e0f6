"""Scoped read tokens (SPEC §12): what a browser may read without the API key.

A token is ``jst1.<payload>.<signature>``: the payload, base64url of
``[job ids or null for every job, expires at]``, signed with HMAC-SHA256
under the service's secret — the one cursors use, with another label, so a
cursor is never a token. Instances sharing the secret accept each other's
tokens; nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass

from .problems import ApiError

PREFIX = "jst1"
DEFAULT_TTL_SECONDS = 900
MAX_TTL_SECONDS = 86_400
MAX_JOB_IDS = 1000


@dataclass(frozen=True, slots=True)
class Grant:
    """What a request may read: every job (the API key), or a token's jobs."""

    #: None: every job.
    job_ids: frozenset[str] | None = None
    #: When a token's grant ends (epoch seconds); None: the API key's.
    expires_at: float | None = None

    def allows(self, job_id: str) -> bool:
        return self.job_ids is None or job_id in self.job_ids


EVERYTHING = Grant()


def issue(job_ids: Iterable[str] | None, expires_at: float, secret: bytes) -> str:
    ids = None if job_ids is None else sorted(set(job_ids))
    payload = _b64(json.dumps([ids, expires_at], separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_b64(_sign(payload, secret))}"


def verify(token: str, secret: bytes, now: float) -> Grant:
    """The grant a token carries; ``401 Unauthorized`` when it was altered,
    is not a token, or has expired."""
    prefix, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    if prefix != PREFIX or not payload or len(token) > 200_000:
        raise unauthorized()
    try:
        given = _unb64(signature)
        if not hmac.compare_digest(given, _sign(payload, secret)):
            raise unauthorized()
        ids, expires_at = json.loads(_unb64(payload))
    except (ValueError, TypeError, binascii.Error):
        raise unauthorized() from None
    # Signed by a holder of the secret, but checked all the same: a token is
    # never the reason for a 500.
    if ids is not None and not (
        isinstance(ids, list) and all(isinstance(i, str) for i in ids)
    ):
        raise unauthorized()
    if (
        isinstance(expires_at, bool)
        or not isinstance(expires_at, (int, float))
        or not now < expires_at
    ):
        raise unauthorized()
    return Grant(None if ids is None else frozenset(ids), float(expires_at))


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def forbidden() -> ApiError:
    return ApiError(403, "Forbidden")


def _sign(payload: str, secret: bytes) -> bytes:
    return hmac.new(secret, b"token\n" + payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
