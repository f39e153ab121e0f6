"""API-key authentication: the default ``Auth`` callable."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from .errors import ConfigError
from .types import Headers

API_KEY_HEADER = "x-api-key"


def key_problem(key: str) -> str | None:
    """Why ``key`` can never authenticate over HTTP, or None. Never shows it.

    Header values reach the app as latin-1 text, so a non-ASCII key typed as
    UTF-8 arrives as other characters; servers strip spaces around a value.
    """
    if not all(" " <= char <= "~" for char in key):
        return "a key must be printable ASCII (no accents, no control characters)"
    if key != key.strip():
        return "a key must not begin or end with a space"
    if "," in key:
        # Two x-api-key fields arrive joined by ", ", so a comma in one is
        # refused on every request: such a key could never match.
        return "a key must not hold a comma"
    return None


class ApiKeyAuth:
    """Accepts a request whose ``x-api-key`` header equals one of the keys.

    Several keys allow rotation. Every key is compared, in constant time, so
    the answer's timing says nothing about which key nearly matched.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        given = tuple(keys)
        if not given or not all(given):
            raise ConfigError("API keys: at least one non-empty key is required")
        for key in given:
            problem = key_problem(key)
            if problem:
                raise ConfigError(f"API keys: {problem}")
        self._keys = tuple(key.encode("ascii") for key in given)

    def __call__(self, headers: Headers) -> bool:
        given = headers.get(API_KEY_HEADER)
        if given is None:
            return False
        # Header values arrive as latin-1 text: a byte above 0x7f is never
        # part of a key (keys are ASCII), and encoding it must not raise.
        candidate = given.encode("latin-1", "replace")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def __repr__(self) -> str:
        # Never show the keys themselves.
        return f"ApiKeyAuth(<{len(self._keys)} keys>)"
