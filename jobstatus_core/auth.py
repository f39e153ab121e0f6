"""API-key authentication: the default ``Auth`` callable."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from .errors import ConfigError
from .types import Headers

API_KEY_HEADER = "x-api-key"


class ApiKeyAuth:
    """Accepts a request whose ``x-api-key`` header equals one of the keys.

    Several keys allow rotation. Every key is compared, in constant time, so
    the answer's timing says nothing about which key nearly matched.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode("utf-8") for key in keys)
        if not self._keys or not all(self._keys):
            raise ConfigError("API keys: at least one non-empty key is required")

    def __call__(self, headers: Headers) -> bool:
        given = headers.get(API_KEY_HEADER)
        if given is None:
            return False
        # Header values arrive as latin-1 text; surrogateescape keeps any
        # undecodable byte comparable instead of raising.
        candidate = given.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def __repr__(self) -> str:
        # Never show the keys themselves.
        return f"ApiKeyAuth(<{len(self._keys)} keys>)"
