"""Settings read from a mapping such as ``os.environ`` (SPEC §6)."""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .auth import key_problem
from .errors import ConfigError
from .params import decimal
from .retention import DEFAULT_TOMBSTONES, OFF, Policy, parse_policy, parse_tombstones

DEFAULT_SINCE_SECONDS = 600.0
DEFAULT_MAX_BODY = 65536
DEFAULT_SQLITE_NAME = "jobstatus.db"
DEFAULT_MAX_WAIT = 60.0
#: The most JOBSTATUS_MAX_WAIT may be: a day. Far more overflows the clocks
#: a wait on a thread is timed with (WSGI: a 500 inside a request).
MOST_MAX_WAIT = 86_400.0
DEFAULT_MAX_WAITERS = 1000
DEFAULT_MAX_STREAMS = 1000
DEFAULT_TERMINAL = ("done", "failed", "cancelled")
METRICS_AUTH = ("key", "none")
SWITCH = ("on", "off")


@dataclass(frozen=True)
class Settings:
    store_url: str
    api_keys: tuple[str, ...]
    #: The setting the store URL came from, named in its errors.
    store_setting: str = "JOBSTATUS_STORE"
    default_since: float = DEFAULT_SINCE_SECONDS
    max_body: int = DEFAULT_MAX_BODY
    #: None: the package version.
    build_number: str | None = None
    #: Signs cursors and scoped tokens; None: derived from the API keys.
    token_secret: str | None = None
    max_wait: float = DEFAULT_MAX_WAIT
    max_waiters: int = DEFAULT_MAX_WAITERS
    max_streams: int = DEFAULT_MAX_STREAMS
    #: An open stream is closed after this long (0: never); clients resume.
    stream_seconds: float = 0.0
    terminal: tuple[str, ...] = DEFAULT_TERMINAL
    #: Origins a browser may call from (CORS); none: CORS is off.
    cors_origins: tuple[str, ...] = ()
    #: ``key``: ``GET /metrics`` needs the API key; ``none``: open.
    metrics_auth: str = "key"
    #: Whether the ASGI app serves the dashboard under ``/dashboard/``.
    dashboard: bool = True
    #: Retention (SPEC §14): how long jobs live by status; off by default.
    retention: Policy = OFF
    #: How long an expired job's tombstone is kept, seconds.
    tombstones: float = DEFAULT_TOMBSTONES

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, cwd: str) -> Settings:
        """Read every setting; a bad one raises ``ConfigError`` naming it.

        ``cwd`` anchors relative paths: the core does no file-system calls.
        """
        store_setting, store_url = store_url_setting(environ, cwd=cwd)
        return cls(
            store_url=store_url,
            store_setting=store_setting,
            api_keys=api_keys(environ),
            default_since=_number(
                environ, "JOBSTATUS_DEFAULT_SINCE", DEFAULT_SINCE_SECONDS
            ),
            max_body=_whole_number(environ, "JOBSTATUS_MAX_BODY", DEFAULT_MAX_BODY),
            build_number=environ.get("BUILD_NUMBER") or None,
            token_secret=environ.get("JOBSTATUS_TOKEN_SECRET", "").strip() or None,
            max_wait=_positive(
                environ, "JOBSTATUS_MAX_WAIT", DEFAULT_MAX_WAIT, MOST_MAX_WAIT
            ),
            max_waiters=_whole_number(
                environ, "JOBSTATUS_MAX_WAITERS", DEFAULT_MAX_WAITERS
            ),
            stream_seconds=_number(environ, "JOBSTATUS_STREAM_SECONDS", 0.0),
            max_streams=_whole_number(
                environ, "JOBSTATUS_MAX_STREAMS", DEFAULT_MAX_STREAMS
            ),
            terminal=_names(environ, "JOBSTATUS_TERMINAL", DEFAULT_TERMINAL),
            cors_origins=cors_origins(environ),
            metrics_auth=_choice(environ, "JOBSTATUS_METRICS_AUTH", METRICS_AUTH),
            dashboard=_choice(environ, "JOBSTATUS_DASHBOARD", SWITCH) == "on",
            retention=parse_policy(environ.get("JOBSTATUS_RETENTION", "")),
            tombstones=parse_tombstones(environ.get("JOBSTATUS_TOMBSTONES", "")),
        )


def store_url_setting(environ: Mapping[str, str], *, cwd: str) -> tuple[str, str]:
    """The store URL, and the name of the setting it came from."""
    explicit = environ.get("JOBSTATUS_STORE", "").strip()
    if explicit:
        return "JOBSTATUS_STORE", explicit
    storage = environ.get("LOCAL_STORAGE_PATH", "").strip()
    if storage:
        # Quoted: a '%41', '#' or '?' in the path is part of the path.
        path = posixpath.normpath(posixpath.join(cwd, storage))
        return "LOCAL_STORAGE_PATH", "file://" + quote_path(path)
    path = posixpath.join(cwd, DEFAULT_SQLITE_NAME)
    return "the default store", "sqlite://" + quote_path(path)


#: Characters a URL path carries as they are; every other is percent-encoded.
_PATH_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/"
)


def quote_path(path: str) -> str:
    """``path`` fit for a URL: a '%', '#' or '?' in it stays part of it."""
    return "".join(
        char
        if char in _PATH_SAFE
        else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogateescape"))
        for char in path
    )


def api_keys(environ: Mapping[str, str]) -> tuple[str, ...]:
    for name in ("API_KEY", "JOBSTATUS_API_KEYS"):
        raw = environ.get(name, "")
        # Empty is unset, as a compose file's `${API_KEY}` leaves it; spaces
        # or commas alone are a key meant and lost, not a request for one.
        if raw and not raw.replace(",", "").strip():
            raise ConfigError(
                f"{name}: holds no key, only spaces or commas"
                " (leave it empty to have a key generated)"
            )
    keys: list[str] = []
    given = [("API_KEY", environ.get("API_KEY", ""))] + [
        ("JOBSTATUS_API_KEYS", key)
        for key in environ.get("JOBSTATUS_API_KEYS", "").split(",")
    ]
    for name, raw in given:
        key = raw.strip()
        problem = key_problem(key)
        if problem:
            raise ConfigError(f"{name}: {problem}")
        if key and key not in keys:
            keys.append(key)
    return tuple(keys)


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = decimal(raw)
    except ValueError:
        raise ConfigError(
            f"{name}: expected a number of seconds, got {raw!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a finite number >= 0, got {raw!r}")
    return value


def _whole_number(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    # ASCII digits: int() also reads "1_000", "+5" and full-width digits.
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
    value = int(raw)
    if value < 1:
        raise ConfigError(f"{name}: expected a whole number >= 1, got {raw!r}")
    return value


def _positive(
    environ: Mapping[str, str], name: str, default: float, most: float
) -> float:
    value = _number(environ, name, default)
    if not 0 < value <= most:
        raw = environ.get(name, "").strip()  # as the other settings' errors
        raise ConfigError(
            f"{name}: expected a number of seconds > 0 and at most {most:g},"
            f" got {raw!r}"
        )
    return value


def _names(
    environ: Mapping[str, str], name: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    names = tuple(
        dict.fromkeys(part.strip() for part in raw.split(",") if part.strip())
    )
    if not names:
        raise ConfigError(f"{name}: expected comma-separated statuses, got {raw!r}")
    return names


def cors_origins(environ: Mapping[str, str]) -> tuple[str, ...]:
    """``JOBSTATUS_CORS_ORIGINS``: whole origins, ``scheme://host[:port]``."""
    given = (
        part.strip() for part in environ.get("JOBSTATUS_CORS_ORIGINS", "").split(",")
    )
    return checked_origins("JOBSTATUS_CORS_ORIGINS", [part for part in given if part])


def checked_origins(name: str, origins: Iterable[str]) -> tuple[str, ...]:
    """Whole origins, ``scheme://host[:port]``, each once; else one line
    naming the setting ``name``."""
    origins = tuple(origins)
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if (
            scheme not in ("http", "https")
            or not sep
            or not host
            or any(char in host for char in "/?#*@ ")
        ):
            raise ConfigError(
                f"{name}: expected origins like https://app.example.com, got {origin!r}"
            )
    return tuple(dict.fromkeys(origins))


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return raw
