"""Checks of the values a host passes in code (``make_service``, the
adapters), as ``config`` checks the environment's: a bad one fails when the
service is built, in one line naming it, never later inside a request
(SPEC §6)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError


def texts(knob: str, given: Iterable[str] | None) -> tuple[str, ...]:
    """``given`` as a tuple of texts (None: none). One string is refused:
    iterated, each of its characters would be taken for an item, and a key
    of one character would open the API."""
    if given is None:
        return ()
    if isinstance(given, (str, bytes)):
        # The value is not shown: it may be an API key.
        raise ConfigError(
            f"{knob}: expected a list of texts, got one text (write [...])"
        )
    items = tuple(given)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{knob}: expected texts, got a {type(item).__name__}")
    return items


def seconds(knob: str, value: Any, *, most: float | None = None) -> float:
    """A finite number of seconds >= 0 (with ``most``: > 0 and at most it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{knob}: expected a number of seconds, got {value!r}")
    if most is None:
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{knob}: expected a finite number >= 0, got {value!r}")
    elif not 0 < value <= most:  # NaN fails it too
        raise ConfigError(
            f"{knob}: expected a number of seconds > 0 and at most {most:g},"
            f" got {value!r}"
        )
    return float(value)


def count(knob: str, value: Any) -> int:
    """A whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{knob}: expected a whole number >= 1, got {value!r}")
    return value
