"""Type aliases shared across the package."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: A job record: the whole JSON object that was stored.
Record = dict[str, Any]

#: The body's ``id`` as echoed in the envelope.
RequestId = str | int | float | None

#: Request headers, looked up by lower-case name.
Headers = Mapping[str, str]

#: Decides whether a request may be served, from its headers.
Auth = Callable[[Headers], bool]
