"""Store URLs, parsed one way for every store.

Each scheme declares the query options it takes, each with its parser, in
``OPTIONS``; anything else in a URL is refused at start, with a message that
never shows a secret. A third-party store declares its own with ``declare``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jobstatus_core import ConfigError
from jobstatus_core.params import decimal
from jobstatus_core.registry import redact

#: Turns an option's text into its value; raises ``ValueError`` with the rule.
OptionParser = Callable[[str], Any]


def seconds(text: str) -> float:
    try:
        value = decimal(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError("must be seconds > 0")
    return value


#: The longest a network store may wait for its server: past it, the
#: socket options made of it (TCP_KEEPIDLE, at most 32,767 s) are refused by
#: the system, and a status endpoint was never meant to wait so long.
MAX_TIMEOUT_SECONDS = 3600.0


def timeout_seconds(text: str) -> float:
    try:
        value = seconds(text)
    except ValueError:
        value = math.nan
    if not value <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"must be seconds > 0 and at most {MAX_TIMEOUT_SECONDS:g}")
    return value


def on_off(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise ValueError("must be on or off")
    return text.lower() == "on"


def _digits(text: str) -> bool:
    """ASCII digits, few enough to be a count (not a 5,000-digit number,
    which ``int`` refuses with a message of its own)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def whole_number(text: str) -> int:
    if not _digits(text):
        raise ValueError("must be a whole number >= 0")
    return int(text)


def positive_count(text: str) -> int:
    if not _digits(text) or int(text) == 0:
        raise ValueError("must be a whole number >= 1")
    return int(text)


def shared_count(text: str) -> int:
    """Redis's ``max_connections``: the change listener keeps one of them
    while anybody waits or streams, and the calls need another."""
    if not _digits(text) or int(text) < 2:
        raise ValueError(
            "must be a whole number >= 2 (the change listener keeps one"
            " while anybody waits or streams)"
        )
    return int(text)


def byte_count(text: str) -> int:
    if not _digits(text) or int(text) == 0:
        raise ValueError("must be a whole number of bytes > 0")
    return int(text)


#: The least ``cache=`` that keeps anything: a sixteenth of it is the
#: largest entry kept (``keptrecords``).
MIN_CACHE_BYTES = 65536


def cache_size(text: str) -> int:
    rule = f"must be 0 (no cache) or a whole number of bytes >= {MIN_CACHE_BYTES}"
    if not _digits(text):
        raise ValueError(rule)
    value = int(text)
    if 0 < value < MIN_CACHE_BYTES:
        raise ValueError(rule)
    return value


def true_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("must be true or false")
    return text.lower() == "true"


def cert_reqs(text: str) -> str:
    if text not in ("none", "optional", "required"):
        raise ValueError("must be none, optional or required")
    return text


def delete(text: str) -> str:
    if text != "delete":
        raise ValueError("must be delete (the only way files expire)")
    return text


def text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


_REDIS: dict[str, OptionParser] = {
    "prefix": text,
    "timeout": timeout_seconds,
    "db": whole_number,
    "username": text,
    "password": text,
    "max_connections": shared_count,
}

_POSTGRES: dict[str, OptionParser] = {
    "schema": text,
    "table": text,
    "timeout": timeout_seconds,
    "max_connections": positive_count,
    # libpq's own, passed on as they are.
    "host": text,
    "sslmode": text,
    "sslrootcert": text,
    "sslcert": text,
    "sslkey": text,
    "application_name": text,
}

#: scheme -> {option: parser}. Options not listed here are refused.
OPTIONS: dict[str, dict[str, OptionParser]] = {
    "memory": {},
    "sqlite": {"cache": cache_size},
    "file": {
        "index": on_off,
        "reconcile": seconds,
        "max_file_size": byte_count,
        "expire": delete,
        "durable": on_off,
        "cache": cache_size,
    },
    "redis": _REDIS,
    "rediss": {
        **_REDIS,
        "ssl_cert_reqs": cert_reqs,
        "ssl_ca_certs": text,
        "ssl_certfile": text,
        "ssl_keyfile": text,
        "ssl_check_hostname": true_false,
    },
    "postgresql": _POSTGRES,
    "postgres": _POSTGRES,
}


def declare(scheme: str, options: Mapping[str, OptionParser]) -> None:
    """Declare the options of a store's scheme (a third-party store's, say)."""
    OPTIONS[scheme.lower()] = dict(options)


@dataclass(frozen=True)
class StoreURL:
    """A store URL taken apart; ``options`` hold parsed values."""

    url: str
    scheme: str
    netloc: str
    #: Still percent-encoded, as in the URL.
    path: str
    options: dict[str, Any] = field(default_factory=dict)

    def fail(self, reason: str) -> ConfigError:
        return ConfigError(f"store URL {redact(self.url)!r}: {reason}")


def parse_store_url(url: str) -> StoreURL:
    """Split ``url`` and check its options against its scheme's declaration."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in OPTIONS:
        raise ConfigError(f"store URL {redact(url)!r}: no options declared")
    parsed = StoreURL(url, scheme, parts.netloc, parts.path)
    if parts.fragment or url.endswith("#"):
        # A '#' in a path silently cuts it short: another directory or file.
        raise parsed.fail("a '#' must be written %23")
    allowed = OPTIONS[scheme]
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = [] if not parts.query else [(parts.query, "")]
    for name, raw in pairs:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            takes = f"known: {known}" if known else f"{scheme}:// takes none"
            raise parsed.fail(f"unknown option {name!r} ({takes})")
        if name in parsed.options:
            raise parsed.fail(f"option {name!r} given twice")
        try:
            parsed.options[name] = allowed[name](raw)
        except ValueError as exc:
            raise parsed.fail(f"{name} {exc}") from None
    return parsed
