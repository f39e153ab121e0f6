"""Stores chosen by URL: ``memory://``, ``file:///…``, ``sqlite:///…``.

Schemes are registered explicitly (never as an import side effect), so a host
sees exactly which stores exist and may add its own.
"""

from __future__ import annotations

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


def redact(url: str) -> str:
    """The URL without a password, fit for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{path}"
