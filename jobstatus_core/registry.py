"""Stores chosen by URL: ``memory://``, ``file:///…``, ``sqlite:///…``.

Schemes are registered explicitly (never as an import side effect), so a host
sees exactly which stores exist and may add its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from .errors import ConfigError
from .protocol import Store

StoreFactory = Callable[[str], Store]
#: Raises ``ConfigError`` when the store a URL names is not there.
PresenceCheck = Callable[[str], None]

T = TypeVar("T")


def _taken_as_there(url: str) -> None:
    """The check of a scheme registered without one: nothing to refuse."""


class Registry:
    def __init__(self) -> None:
        self._factories: dict[str, StoreFactory] = {}
        self._recording: dict[str, StoreFactory] = {}
        self._serving: dict[str, StoreFactory] = {}
        self._present: dict[str, PresenceCheck] = {}

    def register(
        self,
        scheme: str,
        factory: StoreFactory,
        *,
        recording: StoreFactory | None = None,
        serving: StoreFactory | None = None,
        present: PresenceCheck | None = None,
    ) -> None:
        """Open URLs of ``scheme`` with ``factory(url)``. Replaces an earlier one.

        ``recording`` opens the URL for a program that only records states (a
        ``Recorder`` given a URL: a queue worker, a script): it reads one job
        and writes it, so a store may leave out what only answering lists
        needs (the file store's index). ``serving`` opens it for a server,
        which answers as soon as it listens: a store may then make ready in
        the background what takes long (the file store's index), answering
        ``StoreUnavailable`` meanwhile. Both default to ``factory``.

        ``present(url)`` raises ``ConfigError`` when the store is not there
        and opening it would make it (a SQLite file): the commands that only
        read a store (``jobstatus get``, ``list``, ``purge``, ``migrate``'s
        source) ask it first, so a mistyped path is refused instead of
        answered from a new, empty store. Without it, a URL of ``scheme`` is
        taken to name a store that is there.
        """
        key = scheme.lower()
        self._factories[key] = factory
        self._recording[key] = recording or factory
        self._serving[key] = serving or factory
        self._present[key] = present or _taken_as_there

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def open(self, url: str) -> Store:
        return self._lookup(url, self._factories)(url)

    def open_for_recording(self, url: str) -> Store:
        """The store ``url`` names, opened to record into (see ``register``)."""
        return self._lookup(url, self._recording)(url)

    def open_for_serving(self, url: str) -> Store:
        """The store ``url`` names, opened for a server (see ``register``)."""
        return self._lookup(url, self._serving)(url)

    def require_present(self, url: str) -> None:
        """Raise ``ConfigError`` unless the store ``url`` names is there
        already (see ``register``); opens nothing."""
        self._lookup(url, self._present)(url)

    def _lookup(self, url: str, table: dict[str, T]) -> T:
        scheme, colon, _ = url.partition(":")
        found = table.get(scheme.lower()) if colon else None
        if found is None:
            known = ", ".join(f"{name}://" for name in self.schemes)
            raise ConfigError(
                f"store URL {redact(url)!r} has no known scheme (known: {known})"
            )
        return found


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
