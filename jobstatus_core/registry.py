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
        self._recording: dict[str, StoreFactory] = {}
        self._serving: dict[str, StoreFactory] = {}

    def register(
        self,
        scheme: str,
        factory: StoreFactory,
        *,
        recording: StoreFactory | None = None,
        serving: StoreFactory | None = None,
    ) -> None:
        """Open URLs of ``scheme`` with ``factory(url)``. Replaces an earlier one.

        ``recording`` opens the URL for a program that only records states (a
        ``Recorder`` given a URL: a queue worker, a script): it reads one job
        and writes it, so a store may leave out what only answering lists
        needs (the file store's index). ``serving`` opens it for a server,
        which answers as soon as it listens: a store may then make ready in
        the background what takes long (the file store's index), answering
        ``StoreUnavailable`` meanwhile. Both default to ``factory``.
        """
        self._factories[scheme.lower()] = factory
        self._recording[scheme.lower()] = recording or factory
        self._serving[scheme.lower()] = serving or factory

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def open(self, url: str) -> Store:
        return self._factory(url, self._factories)(url)

    def open_for_recording(self, url: str) -> Store:
        """The store ``url`` names, opened to record into (see ``register``)."""
        return self._factory(url, self._recording)(url)

    def open_for_serving(self, url: str) -> Store:
        """The store ``url`` names, opened for a server (see ``register``)."""
        return self._factory(url, self._serving)(url)

    def _factory(self, url: str, factories: dict[str, StoreFactory]) -> StoreFactory:
        scheme, colon, _ = url.partition(":")
        factory = factories.get(scheme.lower()) if colon else None
        if factory is None:
            known = ", ".join(f"{name}://" for name in self.schemes)
            raise ConfigError(
                f"store URL {redact(url)!r} has no known scheme (known: {known})"
            )
        return factory


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
