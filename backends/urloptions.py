"""Options in store URLs' query strings, checked the same way for every store."""

from __future__ import annotations

from jobstatus_core import ConfigError
from jobstatus_core.registry import redact


def seconds_option(
    url: str, options: dict[str, str], name: str, default: float
) -> float:
    """``options[name]`` as a finite number of seconds > 0, else ``default``."""
    raw = options.get(name)
    if raw is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"store URL {redact(url)!r}: {name} must be seconds > 0")
    return seconds
