"""Stores chosen by URL: ``memory://``, ``file:///…``, ``sqlite:///…``.

Schemes are registered explicitly (never as an import side effect), so a host
sees exactly which stores exist and may add its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import ConfigError
from .protocol import Store

StoreFactory = Callable[[str], Store]


class Registry:
    def __init__(self) -> None:
        self._factories: dict[str, StoreFactory] = {}

    def register(self, scheme: str, factory: StoreFactory) -> None:
        """Open URLs of ``scheme`` with ``factory(url)``. Replaces an earlier one."""
        self._factories[scheme.lower()] = factory

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def open(self, url: str) -> Store:
        scheme, colon, _ = url.partition(":")
        factory = self._factories.get(scheme.lower()) if colon else None
        if factory is None:
            known = ", ".join(f"{name}://" for name in self.schemes)
            raise ConfigError(
                f"store URL {redact(url)!r} has no known scheme (known: {known})"
            )
        return factory(url)


#: Query options whose value is a secret, whatever the store: password=,
#: secret=, token=, api_key=, auth=, credentials= ...
_SECRET_OPTION = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL without any secret, fit for messages and logs.

    Hides the password of the userinfo (the whole userinfo when it is one
    word: some services take a token there) and the value of every query
    option named like a secret. When in doubt it hides too much, never too
    little.
    """
    scheme, sep, rest = url.partition("://")
    head = scheme + sep
    if not sep:
        head, rest = "", url
    elif not rest.startswith("/") and "@" in rest:
        # The userinfo ends at the last '@': a password may hold an
        # unencoded '/', '?' or '#'.
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        head += f"{user}:***@" if colon else "***@"
    path, question, query = rest.partition("?")
    pairs = []
    for pair in query.split("&") if question else ():
        name, equals, value = pair.partition("=")
        if equals and value and _SECRET_OPTION.search(name):
            value = "***"
        pairs.append(name + equals + value)
    return head + path + question + "&".join(pairs)
